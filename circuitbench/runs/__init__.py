"""Running units: the grid of (model, task, method, seed), skip and resume, executors, the reduce step."""
