"""``workers: N``: one owner process and N worker processes.

``owner`` holds the store, the admin listener and the systemd protocol and
starts the workers; ``worker`` is one worker process; ``protocol`` is what the
two say to each other besides store calls; ``metrics`` sums the workers'
metric files for the owner's scrape. A role of its own: nothing below imports it.
"""
