-- Roles and databases of the stack, created by the TimescaleDB/PostgreSQL image on its first start (empty data
-- volume only; later starts skip /docker-entrypoint-initdb.d). Runs as the superuser after the image's own
-- 000_* scripts.
--
--   mlflow_db    MLflow's tracking and registry store (owner mlflow, as in the seed)
--   mlflow_auth  MLflow's basic-auth user store (owner mlflow), kept apart from the tracking tables
--   dagster      the Dagster instance: runs, events, schedules (owner dagster)
--
-- The passwords are never written here: psql reads them from the container's environment (compose passes them
-- from docker/.env) and quotes them with :'var', so any character is safe.

\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv dagster_password DAGSTER_DB_PASSWORD

-- Compose refuses to start without them; should the script run elsewhere, say why before CREATE ROLE fails
-- (the entrypoint runs psql with ON_ERROR_STOP=1, so the init stops there).
\if :{?mlflow_password}
\else
  \warn 'MLFLOW_DB_PASSWORD is not set in the container environment'
\endif
\if :{?dagster_password}
\else
  \warn 'DAGSTER_DB_PASSWORD is not set in the container environment'
\endif

CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';

CREATE DATABASE mlflow_db OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE DATABASE dagster OWNER dagster;

-- Each service sees its own databases only.
REVOKE ALL ON DATABASE mlflow_db FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow_auth FROM PUBLIC;
REVOKE ALL ON DATABASE dagster FROM PUBLIC;
