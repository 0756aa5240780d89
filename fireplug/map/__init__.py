"""`fp map`: parameters and joblog (params.py, pure), the scheduler over hosts' lanes (scheduler.py)."""
