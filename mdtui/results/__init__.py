"""What finished runs mean: RESULTS.md, report tables and their rendering, compare, plots."""
