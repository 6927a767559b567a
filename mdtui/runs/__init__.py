"""What a run is: its status, its record, its directory and the index of all runs (the only SQL on ``runs``)."""
