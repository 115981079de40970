"""Self-watch (issue #13): the server verifies its own log continuously, incrementally, and in full on a
schedule, and says so loudly when it does not verify (selfwatch/watcher.py)."""
