"""Read models of the orders example."""
