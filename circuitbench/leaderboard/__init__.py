"""The leaderboard: the board's protocol, submission validation and acceptance, and the static site.

`protocol` (the settings every unit on a board was run with, and the numbers recomputed from measurements),
`submit` (the submission format, `validate`, `accept`), `site` (the static HTML board), `draw` (SVG
circuits and plots).
"""
