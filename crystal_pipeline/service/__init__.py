"""Running the pipeline as a lab service, without importing Dagster.

``make serve`` (``scripts/serve.py``) starts, in the foreground: a PostgreSQL server
for the Dagster instance (the project's own cluster under ``<data_dir>/postgres``,
or an external one from ``CRYSTAL_POSTGRES_URL``), the code location as a gRPC code
server, ``dagster-daemon`` and ``dagster-webserver``, each a separate process. This
package writes the serve profile's ``dagster.yaml`` (:mod:`.instance`), runs the
embedded Postgres (:mod:`.postgres`), supervises the processes and stops every one
of them on Ctrl-C or SIGTERM (:mod:`.supervisor`), and answers ``crystal-pipeline
doctor`` (:mod:`.health`). Dagster itself is only ever started as its own programs.
"""
