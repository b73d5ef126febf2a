"""Built-in task kinds: each module registers one or more kinds (``register_task``) and is discovered, not listed."""
