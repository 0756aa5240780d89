"""One run: the request and container spec (pure), the pipeline (choose -> prepare -> sync in -> run -> sync out), records."""
