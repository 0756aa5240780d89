"""What every layer uses: events (the library's voice), the one subprocess wrapper, locks, secrets, labels, signals, sizes."""
