"""The leaderboard: the board's protocol, submission validation and acceptance, and the static site.

`protocol` (the settings every unit on a board was run with, and the numbers recomputed from measurements),
`submission` (the `submission.json` format), `submit` (`validate`, `accept`), `board` (accepted
submissions read back), `site` (the static HTML board), `draw` (SVG circuits and plots). May import the
ground floor, `tasks/`, `results/`, `circuits/` and `runs/` (re-evaluating a sample with `--verify`).
"""
