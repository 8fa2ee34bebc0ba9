"""The databases engine: logical dumps streamed into snapshots and back into a server.

- :mod:`.client`: the database client tools (pg_dump, psql, mysqldump, ...) as subprocesses;
- :mod:`.dump`: a dump tool's output streamed into the repository, one snapshot per database;
- :mod:`.restore`: a snapshot's dump streamed into the restore tool;
- :mod:`.check`: a dump read to its end without a server (is it whole?);
- :mod:`.scratch`: a dump restored into a scratch database, counted and dropped.

Nothing is imported here: a command loads only the modules it runs.
"""
