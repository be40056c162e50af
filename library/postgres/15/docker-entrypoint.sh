#!/bin/sh
# What people use of the official postgres image's entrypoint: POSTGRES_PASSWORD, POSTGRES_USER,
# POSTGRES_DB, POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD, /docker-entrypoint-initdb.d,
# initialisation on first start into $PGDATA, listening on all addresses.
set -e
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi

if [ "$1" = "postgres" ] && [ "$(id -u)" = "0" ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql && chmod 2777 /var/run/postgresql
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != "trust" ]; then
            echo "Error: Database is uninitialized and superuser password is not specified." >&2
            echo "       You must specify POSTGRES_PASSWORD to a non-empty value for the superuser." >&2
            echo "       You may also use \"POSTGRES_HOST_AUTH_METHOD=trust\" to allow all connections without a password." >&2
            exit 1
        fi
        user="${POSTGRES_USER:-postgres}"
        db="${POSTGRES_DB:-$user}"
        pwfile=$(mktemp); printf '%s' "${POSTGRES_PASSWORD}" > "$pwfile"; chown postgres "$pwfile"
        as_postgres initdb --username="$user" --pwfile="$pwfile" $POSTGRES_INITDB_ARGS -D "$PGDATA"
        rm -f "$pwfile"
        auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
        printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
        as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
        export PGPASSWORD="$POSTGRES_PASSWORD"
        if [ "$db" != "postgres" ]; then
            echo "CREATE DATABASE \"$db\";" | as_postgres psql -v ON_ERROR_STOP=1 --username "$user" --no-password --dbname postgres
        fi
        for f in /docker-entrypoint-initdb.d/*; do
            case "$f" in
                *.sh) echo "running $f"; . "$f" ;;
                *.sql) echo "running $f"; as_postgres psql -v ON_ERROR_STOP=1 --username "$user" --no-password --dbname "$db" -f "$f" ;;
                *) ;;
            esac
        done
        as_postgres pg_ctl -D "$PGDATA" -m fast -w stop
        echo "PostgreSQL init process complete; ready for start up."
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$@" -c listen_addresses='*'
fi
exec "$@"
