"""The queue and the detached scheduler that starts queued runs when their devices are free."""
