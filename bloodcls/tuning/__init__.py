"""Ray Tune sweeps for ``bloodcls tune`` (the command is ``bloodcls.commands.tune``): the sweep file and its search
space, config resolution, the in-process trial, the Ray plumbing, trial results and plots."""
