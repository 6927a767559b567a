"""A run's life: the launcher (start, stop, poll), the supervisor, the device ledger and reconcile."""
