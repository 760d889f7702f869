"""The SQL of `PostgresStore`: its migrations and its statements.

Every name is qualified with the store's schema (``{s}`` in the templates).
A migration runs once, in order, under an advisory lock so that several
processes opening the same database at once apply it once.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SQL"]

#: One trigger's admission in one round trip: the rule of `tukio.store._gate`, in SQL (a test
#: holds the two to the same answers). Made by migration 3, remade by 5 (liveness: the lease alone).
_ADMIT_BODY = """
    CREATE OR REPLACE FUNCTION {s}.admit(
        p_node text, p_epoch bigint, p_lock integer, p_key integer, p_ns integer, p_policy text,
        p_here text[], p_exec_id text, p_template_id text, p_started text, p_template bytea,
        p_event bytea, p_texts boolean, p_now text<VERSION>, OUT decision text, OUT waits text[]
    ) LANGUAGE plpgsql AS $fn$
    DECLARE
        r record;
        n_running integer := 0;
        n_locked integer := 0;
        dead text[] := '{{}}';
        remote text[] := '{{}}';
        mine text[] := '{{}}';
    BEGIN
        waits := '{{}}';
        -- One admission of the template at a time, until the commit; every statement after it
        -- sees what the admissions before committed.
        PERFORM pg_advisory_xact_lock(p_lock, p_key);
        PERFORM 1 FROM {s}.nodes WHERE name = p_node AND epoch = p_epoch FOR SHARE;
        IF NOT FOUND THEN
            decision := 'replaced';
            RETURN;
        END IF;
        IF EXISTS (SELECT 1 FROM {s}.executions WHERE exec_id = p_exec_id) THEN
            decision := 'start';  -- admitted by an attempt whose answer was lost
            RETURN;
        END IF;
        FOR r IN
            SELECT x.exec_id, x.locked, x.owner, x.epoch,
                   x.owner IN (SELECT n.name FROM {s}.nodes AS n WHERE n.expires >= now()) AS alive
              FROM {s}.executions AS x
             WHERE x.state = 'pending' AND x.template_id = p_template_id
             ORDER BY x.exec_id FOR UPDATE OF x
        LOOP
            IF r.owner = p_node AND r.epoch = p_epoch THEN
                -- This node's own: counted only while it runs here (else its end is not committed yet).
                CONTINUE WHEN NOT r.exec_id = ANY(p_here);
                mine := mine || r.exec_id;
            ELSIF r.alive THEN
                remote := remote || r.exec_id;
            ELSE
                dead := dead || r.exec_id;
            END IF;
            n_running := n_running + 1;
            IF r.locked THEN
                n_locked := n_locked + 1;
            END IF;
        END LOOP;
        decision := CASE
            WHEN p_policy = 'skip' AND n_running > 0 THEN 'skip'
            WHEN p_policy = 'skip-until-unlock' AND n_locked > 0 THEN 'skip'
            WHEN p_policy = 'abort-running' AND n_running > 0 THEN 'abort-then-start'
            ELSE 'start' END;
        IF decision = 'skip' THEN
            RETURN;
        END IF;
<INSERT>        IF decision = 'abort-then-start' THEN
            -- A dead node's execution is cancelled now, and made this node's: its zombie is fenced.
            UPDATE {s}.executions SET state = 'cancelled', ended = p_now, locked = false, owner = p_node,
                   epoch = p_epoch
             WHERE exec_id = ANY(dead);
            INSERT INTO {s}.cancels (exec_id, by_node) SELECT unnest(remote), p_node
                ON CONFLICT (exec_id) DO NOTHING;
            IF cardinality(remote) > 0 THEN
                PERFORM pg_notify('tukio_cancels_' || p_ns, '');  -- the owners act at once
            END IF;
            waits := remote || mine;
        END IF;
    END
    $fn$;
"""


def _admit(*, versioned: bool) -> str:
    """The `admit` function: the one rule of `tukio.store._gate` on the rows of a template, in one round trip.

    `versioned`: the begin record names its template version (migration 7
    on), and the template is kept once per version.
    """
    if not versioned:
        return _ADMIT_BODY.replace("<VERSION>", "").replace("<INSERT>", _INSERT_UNVERSIONED.lstrip("\n"))
    return _ADMIT_BODY.replace("<VERSION>", ", p_version text").replace("<INSERT>", _INSERT_VERSIONED.lstrip("\n"))


_INSERT_UNVERSIONED = """
        INSERT INTO {s}.executions (exec_id, template_id, state, started, template, event, texts, owner, epoch)
        VALUES (p_exec_id, p_template_id, 'pending', p_started, p_template, p_event, p_texts, p_node, p_epoch);
"""
_INSERT_VERSIONED = """
        IF p_version IS NOT NULL AND p_template IS NOT NULL THEN
            INSERT INTO {s}.versions (version, template_id, template, texts)
            VALUES (p_version, p_template_id, p_template, p_texts) ON CONFLICT (version) DO NOTHING;
        END IF;
        INSERT INTO {s}.executions (exec_id, template_id, state, started, template, event, texts, version, owner,
                                    epoch)
        VALUES (p_exec_id, p_template_id, 'pending', p_started, CASE WHEN p_version IS NULL THEN p_template END,
                p_event, p_texts, p_version, p_node, p_epoch);
"""
_ADMIT = _admit(versioned=False)

#: Migration n (1-based) brings the schema from version n-1 to n.
MIGRATIONS: tuple[str, ...] = (
    # 1: executions, tasks, nodes, and the one-round-trip write function.
    """
    CREATE TABLE {s}.executions (
        exec_id text PRIMARY KEY,
        template_id text,
        state text NOT NULL,
        started text,
        ended text,
        error text,
        template bytea,
        event bytea,
        texts boolean NOT NULL DEFAULT true,
        owner text,
        epoch bigint
    );
    CREATE INDEX executions_by_state ON {s}.executions (state, template_id);
    CREATE INDEX executions_pending_by_owner ON {s}.executions (owner) WHERE state = 'pending';
    CREATE TABLE {s}.tasks (
        exec_id text NOT NULL,
        task_id text NOT NULL,
        task_exec_id text,
        state text NOT NULL,
        started text,
        ended text,
        data bytea,
        error text,
        texts boolean NOT NULL DEFAULT true,
        PRIMARY KEY (exec_id, task_id)
    );
    CREATE TABLE {s}.nodes (
        name text PRIMARY KEY,
        id serial UNIQUE,
        epoch bigint NOT NULL,
        lease double precision NOT NULL,
        beat timestamptz NOT NULL,
        expires timestamptz NOT NULL
    );
    CREATE FUNCTION {s}.write_batch(
        p_node text, p_epoch bigint,
        e_id text[], e_template_id text[], e_state text[], e_started text[], e_ended text[],
        e_error text[], e_template bytea[], e_event bytea[], e_texts boolean[],
        t_exec text[], t_task text[], t_task_exec text[], t_state text[], t_started text[],
        t_ended text[], t_data bytea[], t_error text[], t_texts boolean[]
    ) RETURNS text[] LANGUAGE plpgsql AS $fn$
    DECLARE
        fenced text[] := '{{}}';
    BEGIN
        IF p_node IS NOT NULL THEN
            -- A node whose epoch moved on (restarted elsewhere) writes nothing.
            PERFORM 1 FROM {s}.nodes WHERE name = p_node AND epoch = p_epoch FOR SHARE;
            IF NOT FOUND THEN
                RETURN ARRAY(SELECT DISTINCT x FROM unnest(e_id || t_exec) AS x);
            END IF;
            -- Lock the rows written (a claim waits for this commit), and refuse
            -- the executions another owner or epoch holds.
            SELECT coalesce(array_agg(x.exec_id) FILTER (
                       WHERE x.owner IS DISTINCT FROM p_node OR x.epoch IS DISTINCT FROM p_epoch), '{{}}')
              INTO fenced
              FROM (SELECT exec_id, owner, epoch FROM {s}.executions
                     WHERE exec_id = ANY(e_id || t_exec) ORDER BY exec_id FOR UPDATE) AS x;
        END IF;
        INSERT INTO {s}.executions AS old
               (exec_id, template_id, state, started, ended, error, template, event, texts, owner, epoch)
        SELECT r.i, r.tid, r.st, r.sa, r.en, r.er, r.tp, r.ev, r.tx, p_node, p_epoch
          FROM unnest(e_id, e_template_id, e_state, e_started, e_ended, e_error, e_template, e_event, e_texts)
               AS r(i, tid, st, sa, en, er, tp, ev, tx)
         WHERE NOT r.i = ANY(fenced)
        ON CONFLICT (exec_id) DO UPDATE SET
            template_id = coalesce(excluded.template_id, old.template_id),
            state = excluded.state,
            started = coalesce(excluded.started, old.started),
            ended = excluded.ended,
            error = excluded.error,
            template = coalesce(excluded.template, old.template),
            event = coalesce(excluded.event, old.event),
            texts = CASE WHEN excluded.template IS NULL AND excluded.event IS NULL
                         THEN old.texts ELSE excluded.texts END;
        INSERT INTO {s}.tasks AS old (exec_id, task_id, task_exec_id, state, started, ended, data, error, texts)
        SELECT r.*
          FROM unnest(t_exec, t_task, t_task_exec, t_state, t_started, t_ended, t_data, t_error, t_texts)
               AS r(i, k, ke, st, sa, en, da, er, tx)
         WHERE NOT r.i = ANY(fenced)
        ON CONFLICT (exec_id, task_id) DO UPDATE SET
            task_exec_id = excluded.task_exec_id,
            state = excluded.state,
            started = excluded.started,
            ended = excluded.ended,
            data = excluded.data,
            error = excluded.error,
            texts = excluded.texts;
        RETURN fenced;
    END
    $fn$;
    """,
    # 2: events shared by the nodes (data_received on one node reaches the tasks of all).
    """
    CREATE TABLE {s}.events (
        id bigserial PRIMARY KEY,
        origin text,
        topic text,
        data bytea NOT NULL,
        texts boolean NOT NULL,
        at timestamptz NOT NULL DEFAULT now()
    );
    CREATE FUNCTION {s}.publish(p_origin text, p_topic text, p_data bytea, p_texts boolean, p_lock integer,
                                p_channel text) RETURNS bigint LANGUAGE plpgsql AS $fn$
    DECLARE
        new_id bigint;
    BEGIN
        -- One publisher at a time: ids become visible in their order, so a
        -- reader that saw id n never misses an id below n.
        PERFORM pg_advisory_xact_lock(p_lock, 0);  -- (nodes hold (p_lock, their id > 0))
        INSERT INTO {s}.events (origin, topic, data, texts) VALUES (p_origin, p_topic, p_data, p_texts)
        RETURNING id INTO new_id;
        PERFORM pg_notify(p_channel, new_id::text);
        RETURN new_id;
    END
    $fn$;
    """,
    # 3: overrun policies across nodes (whether each execution still holds its lock, requests to
    # cancel an execution wherever it runs), and which nodes carry a name of their own.
    """
    ALTER TABLE {s}.executions ADD COLUMN locked boolean NOT NULL DEFAULT true;
    CREATE INDEX executions_pending_by_template ON {s}.executions (template_id) WHERE state = 'pending';
    CREATE TABLE {s}.cancels (
        exec_id text PRIMARY KEY,
        by_node text,
        at timestamptz NOT NULL DEFAULT now()
    );
    ALTER TABLE {s}.nodes ADD COLUMN ephemeral boolean NOT NULL DEFAULT false;
    """
    + _ADMIT,
    # 4: the events running tasks received, replayed when a task runs again (after a takeover),
    # and a batch with such events in one round trip: write_batch, then the events.
    """
    CREATE TABLE {s}.task_events (
        exec_id text NOT NULL,
        task_id text NOT NULL,
        seq bigint NOT NULL,
        data bytea,
        texts boolean NOT NULL DEFAULT true,
        error text,
        PRIMARY KEY (exec_id, task_id, seq)
    );
    CREATE FUNCTION {s}.write_batch_events(
        p_node text, p_epoch bigint,
        e_id text[], e_template_id text[], e_state text[], e_started text[], e_ended text[],
        e_error text[], e_template bytea[], e_event bytea[], e_texts boolean[],
        t_exec text[], t_task text[], t_task_exec text[], t_state text[], t_started text[],
        t_ended text[], t_data bytea[], t_error text[], t_texts boolean[],
        v_exec text[], v_task text[], v_seq bigint[], v_data bytea[], v_texts boolean[], v_error text[]
    ) RETURNS text[] LANGUAGE plpgsql AS $fn$
    DECLARE
        fenced text[];
        owned text[];
    BEGIN
        fenced := {s}.write_batch(p_node, p_epoch, e_id, e_template_id, e_state, e_started, e_ended, e_error,
                                  e_template, e_event, e_texts, t_exec, t_task, t_task_exec, t_state, t_started,
                                  t_ended, t_data, t_error, t_texts);
        IF p_node IS NULL THEN
            owned := ARRAY(SELECT DISTINCT x FROM unnest(v_exec) AS x);
        ELSE
            -- Locked until the commit: a claim waits for it.
            owned := ARRAY(SELECT exec_id FROM {s}.executions
                            WHERE exec_id = ANY(v_exec) AND owner = p_node AND epoch = p_epoch
                            ORDER BY exec_id FOR SHARE);
        END IF;
        -- Data and error NULL mark a new attempt: the task's earlier events go (those of this batch too).
        INSERT INTO {s}.task_events AS old (exec_id, task_id, seq, data, texts, error)
        SELECT r.i, r.k, r.q, r.d, r.tx, r.er
          FROM unnest(v_exec, v_task, v_seq, v_data, v_texts, v_error) AS r(i, k, q, d, tx, er)
         WHERE r.i = ANY(owned) AND (r.d IS NOT NULL OR r.er IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM unnest(v_exec, v_task, v_seq, v_data, v_error) AS m(i, k, q, d, er)
                            WHERE m.d IS NULL AND m.er IS NULL AND m.i = r.i AND m.k = r.k AND m.q > r.q)
        ON CONFLICT (exec_id, task_id, seq) DO UPDATE SET
            data = excluded.data, texts = excluded.texts, error = excluded.error;
        DELETE FROM {s}.task_events AS t
         USING unnest(v_exec, v_task, v_seq, v_data, v_error) AS m(i, k, q, d, er)
         WHERE m.d IS NULL AND m.er IS NULL AND m.i = ANY(owned)
           AND t.exec_id = m.i AND t.task_id = m.k AND t.seq < m.q;
        RETURN fenced || ARRAY(SELECT DISTINCT x FROM unnest(v_exec) AS x
                                WHERE NOT x = ANY(owned) AND NOT x = ANY(fenced));
    END
    $fn$;
    """,
    # 5: a node is alive while its lease runs, whatever happens to its connections (admit again).
    _ADMIT,
    # 6: a published event carries a key of its publisher's choosing: publishing again after a
    # lost connection (the first commit may have happened) keeps the event once.
    """
    ALTER TABLE {s}.events ADD COLUMN key uuid;
    CREATE UNIQUE INDEX events_key ON {s}.events (key);
    DROP FUNCTION {s}.publish(text, text, bytea, boolean, integer, text);
    CREATE FUNCTION {s}.publish(p_origin text, p_topic text, p_data bytea, p_texts boolean, p_lock integer,
                                p_channel text, p_key uuid) RETURNS bigint LANGUAGE plpgsql AS $fn$
    DECLARE
        new_id bigint;
    BEGIN
        -- One publisher at a time: ids become visible in their order, so a
        -- reader that saw id n never misses an id below n.
        PERFORM pg_advisory_xact_lock(p_lock, 0);  -- (nodes hold (p_lock, their id > 0))
        SELECT id INTO new_id FROM {s}.events WHERE key = p_key;
        IF FOUND THEN
            RETURN new_id;  -- published already: its commit's answer was lost with the connection
        END IF;
        INSERT INTO {s}.events (origin, topic, data, texts, key) VALUES (p_origin, p_topic, p_data, p_texts, p_key)
        RETURNING id INTO new_id;
        PERFORM pg_notify(p_channel, new_id::text);
        RETURN new_id;
    END
    $fn$;
    """,
    # 7: template versions: one copy of each version (an execution names its version), and the
    # functions that write executions, now with their version.
    """
    CREATE TABLE {s}.versions (
        version text PRIMARY KEY,
        template_id text,
        template bytea NOT NULL,
        texts boolean NOT NULL DEFAULT true,
        created timestamptz NOT NULL DEFAULT now()
    );
    ALTER TABLE {s}.executions ADD COLUMN version text;
    DROP FUNCTION {s}.write_batch_events(text, bigint, text[], text[], text[], text[], text[], text[], bytea[],
        bytea[], boolean[], text[], text[], text[], text[], text[], text[], bytea[], text[], boolean[], text[],
        text[], bigint[], bytea[], boolean[], text[]);
    DROP FUNCTION {s}.write_batch(text, bigint, text[], text[], text[], text[], text[], text[], bytea[], bytea[],
        boolean[], text[], text[], text[], text[], text[], text[], bytea[], text[], boolean[]);
    DROP FUNCTION {s}.admit(text, bigint, integer, integer, integer, text, text[], text, text, text, bytea, bytea,
        boolean, text);
    CREATE FUNCTION {s}.write_batch(
        p_node text, p_epoch bigint,
        e_id text[], e_template_id text[], e_state text[], e_started text[], e_ended text[],
        e_error text[], e_template bytea[], e_event bytea[], e_texts boolean[], e_version text[],
        t_exec text[], t_task text[], t_task_exec text[], t_state text[], t_started text[],
        t_ended text[], t_data bytea[], t_error text[], t_texts boolean[]
    ) RETURNS text[] LANGUAGE plpgsql AS $fn$
    DECLARE
        fenced text[] := '{{}}';
    BEGIN
        IF p_node IS NOT NULL THEN
            -- A node whose epoch moved on (restarted elsewhere) writes nothing.
            PERFORM 1 FROM {s}.nodes WHERE name = p_node AND epoch = p_epoch FOR SHARE;
            IF NOT FOUND THEN
                RETURN ARRAY(SELECT DISTINCT x FROM unnest(e_id || t_exec) AS x);
            END IF;
            -- Lock the rows written (a claim waits for this commit), and refuse
            -- the executions another owner or epoch holds.
            SELECT coalesce(array_agg(x.exec_id) FILTER (
                       WHERE x.owner IS DISTINCT FROM p_node OR x.epoch IS DISTINCT FROM p_epoch), '{{}}')
              INTO fenced
              FROM (SELECT exec_id, owner, epoch FROM {s}.executions
                     WHERE exec_id = ANY(e_id || t_exec) ORDER BY exec_id FOR UPDATE) AS x;
        END IF;
        -- One copy of each template version (not owned by any node).
        INSERT INTO {s}.versions (version, template_id, template, texts)
        SELECT DISTINCT ON (r.v) r.v, r.tid, r.tp, r.tx
          FROM unnest(e_version, e_template_id, e_template, e_texts) AS r(v, tid, tp, tx)
         WHERE r.v IS NOT NULL AND r.tp IS NOT NULL
        ON CONFLICT (version) DO NOTHING;
        INSERT INTO {s}.executions AS old
               (exec_id, template_id, state, started, ended, error, template, event, texts, version, owner, epoch)
        SELECT r.i, r.tid, r.st, r.sa, r.en, r.er, CASE WHEN r.v IS NULL THEN r.tp END, r.ev, r.tx, r.v,
               p_node, p_epoch
          FROM unnest(e_id, e_template_id, e_state, e_started, e_ended, e_error, e_template, e_event, e_texts,
                      e_version)
               AS r(i, tid, st, sa, en, er, tp, ev, tx, v)
         WHERE NOT r.i = ANY(fenced)
        ON CONFLICT (exec_id) DO UPDATE SET
            template_id = coalesce(excluded.template_id, old.template_id),
            state = excluded.state,
            started = coalesce(excluded.started, old.started),
            ended = excluded.ended,
            error = excluded.error,
            template = coalesce(excluded.template, old.template),
            event = coalesce(excluded.event, old.event),
            version = coalesce(excluded.version, old.version),
            texts = CASE WHEN excluded.template IS NULL AND excluded.event IS NULL
                         THEN old.texts ELSE excluded.texts END;
        INSERT INTO {s}.tasks AS old (exec_id, task_id, task_exec_id, state, started, ended, data, error, texts)
        SELECT r.*
          FROM unnest(t_exec, t_task, t_task_exec, t_state, t_started, t_ended, t_data, t_error, t_texts)
               AS r(i, k, ke, st, sa, en, da, er, tx)
         WHERE NOT r.i = ANY(fenced)
        ON CONFLICT (exec_id, task_id) DO UPDATE SET
            task_exec_id = excluded.task_exec_id,
            state = excluded.state,
            started = excluded.started,
            ended = excluded.ended,
            data = excluded.data,
            error = excluded.error,
            texts = excluded.texts;
        RETURN fenced;
    END
    $fn$;
    """
    + _admit(versioned=True).replace("CREATE OR REPLACE FUNCTION", "CREATE FUNCTION", 1)
    + """
    CREATE FUNCTION {s}.write_batch_events(
        p_node text, p_epoch bigint,
        e_id text[], e_template_id text[], e_state text[], e_started text[], e_ended text[],
        e_error text[], e_template bytea[], e_event bytea[], e_texts boolean[], e_version text[],
        t_exec text[], t_task text[], t_task_exec text[], t_state text[], t_started text[],
        t_ended text[], t_data bytea[], t_error text[], t_texts boolean[],
        v_exec text[], v_task text[], v_seq bigint[], v_data bytea[], v_texts boolean[], v_error text[]
    ) RETURNS text[] LANGUAGE plpgsql AS $fn$
    DECLARE
        fenced text[];
        owned text[];
    BEGIN
        fenced := {s}.write_batch(p_node, p_epoch, e_id, e_template_id, e_state, e_started, e_ended, e_error,
                                  e_template, e_event, e_texts, e_version, t_exec, t_task, t_task_exec, t_state,
                                  t_started, t_ended, t_data, t_error, t_texts);
        IF p_node IS NULL THEN
            owned := ARRAY(SELECT DISTINCT x FROM unnest(v_exec) AS x);
        ELSE
            -- Locked until the commit: a claim waits for it.
            owned := ARRAY(SELECT exec_id FROM {s}.executions
                            WHERE exec_id = ANY(v_exec) AND owner = p_node AND epoch = p_epoch
                            ORDER BY exec_id FOR SHARE);
        END IF;
        -- Data and error NULL mark a new attempt: the task's earlier events go (those of this batch too).
        INSERT INTO {s}.task_events AS old (exec_id, task_id, seq, data, texts, error)
        SELECT r.i, r.k, r.q, r.d, r.tx, r.er
          FROM unnest(v_exec, v_task, v_seq, v_data, v_texts, v_error) AS r(i, k, q, d, tx, er)
         WHERE r.i = ANY(owned) AND (r.d IS NOT NULL OR r.er IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM unnest(v_exec, v_task, v_seq, v_data, v_error) AS m(i, k, q, d, er)
                            WHERE m.d IS NULL AND m.er IS NULL AND m.i = r.i AND m.k = r.k AND m.q > r.q)
        ON CONFLICT (exec_id, task_id, seq) DO UPDATE SET
            data = excluded.data, texts = excluded.texts, error = excluded.error;
        DELETE FROM {s}.task_events AS t
         USING unnest(v_exec, v_task, v_seq, v_data, v_error) AS m(i, k, q, d, er)
         WHERE m.d IS NULL AND m.er IS NULL AND m.i = ANY(owned)
           AND t.exec_id = m.i AND t.task_id = m.k AND t.seq < m.q;
        RETURN fenced || ARRAY(SELECT DISTINCT x FROM unnest(v_exec) AS x
                                WHERE NOT x = ANY(owned) AND NOT x = ANY(fenced));
    END
    $fn$;
    """,
    # 8: listings of `tukio.manage`, newest first, by start time and id (keyset pages), all of them
    # or those of a state or a template; and the failed tasks, to find the executions that have some.
    """
    CREATE INDEX executions_by_start ON {s}.executions ((coalesce(started, '')), exec_id);
    CREATE INDEX executions_by_state_start ON {s}.executions (state, (coalesce(started, '')), exec_id);
    CREATE INDEX executions_by_template_start ON {s}.executions (template_id, (coalesce(started, '')), exec_id);
    CREATE INDEX tasks_failed ON {s}.tasks (state, exec_id) WHERE state IN ('exception', 'timeout');
    """,
    # 9: flow control: the durable queue (state 'queued'; see tukio.store._flowsql): each queued
    # execution's priority, partition, due time and arrival (seconds, the server's clock); when each
    # started (rates); whether its owner has yet to launch it. And the admission of a template with
    # no concurrency key and no rate in one round trip: `_flowsql._admit` in SQL (a test holds the
    # two to the same answers).
    """
    CREATE FUNCTION {s}.flow_admit(
        p_template text, p_node text, p_epoch bigint, p_limit integer, p_lock integer, p_key integer,
        p_channel text, OUT launch text[]
    ) LANGUAGE plpgsql AS $fn$
    DECLARE
        v_now double precision;
        v_free integer;
        v_others boolean := false;
        r record;
    BEGIN
        launch := '{{}}';
        -- The steps of one template take turns, until the commit.
        PERFORM pg_advisory_xact_lock(p_lock, p_key);
        v_now := extract(epoch FROM clock_timestamp());
        IF p_limit IS NOT NULL THEN
            SELECT p_limit - count(*) INTO v_free
              FROM {s}.executions WHERE template_id = p_template AND state = 'pending';
            IF v_free <= 0 THEN
                RETURN;
            END IF;
        END IF;
        FOR r IN
            WITH c AS (
                SELECT q.exec_id FROM {s}.executions AS q
                 WHERE q.template_id = p_template AND q.state = 'queued' AND (q.due IS NULL OR q.due <= v_now)
                 ORDER BY q.priority DESC, q.queued_at, q.exec_id
                 LIMIT v_free
            )
            UPDATE {s}.executions AS x
               SET state = 'pending', admitted = v_now,
                   launch = CASE WHEN x.owner = p_node AND x.epoch = p_epoch THEN 0 ELSE 1 END
              FROM c WHERE x.exec_id = c.exec_id
            RETURNING x.exec_id, coalesce(x.owner = p_node AND x.epoch = p_epoch, false) AS mine
        LOOP
            IF r.mine THEN
                launch := launch || r.exec_id;
            ELSE
                v_others := true;
            END IF;
        END LOOP;
        IF v_others THEN
            PERFORM pg_notify(p_channel, '');
        END IF;
    END;
    $fn$;

    ALTER TABLE {s}.executions ADD COLUMN priority integer NOT NULL DEFAULT 0;
    ALTER TABLE {s}.executions ADD COLUMN part text;
    ALTER TABLE {s}.executions ADD COLUMN due double precision;
    ALTER TABLE {s}.executions ADD COLUMN queued_at double precision;
    ALTER TABLE {s}.executions ADD COLUMN admitted double precision;
    ALTER TABLE {s}.executions ADD COLUMN launch integer NOT NULL DEFAULT 0;
    CREATE INDEX executions_queue ON {s}.executions (template_id, priority DESC, queued_at, exec_id)
        WHERE state = 'queued';
    CREATE INDEX executions_admitted ON {s}.executions (template_id, admitted) WHERE admitted IS NOT NULL;
    CREATE INDEX executions_launch ON {s}.executions (owner, epoch, template_id) WHERE launch = 1;
    """,
    # 10: schedules paused for every engine of the store.
    """
    CREATE TABLE {s}.schedule_pauses (template_id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
    """,
)


class SQL:
    """The statements of one schema (``{s}`` filled in)."""

    def __init__(self, schema: str) -> None:
        s = '"' + schema.replace('"', '""') + '"'
        self.schema = s
        self.write = f"SELECT {s}.write_batch(" + ", ".join(f"${n}" for n in range(1, 22)) + ")"
        # The template of the execution's version (or its own copy, from before versions).
        self.load_execution = (
            "SELECT e.exec_id, e.template_id, e.state, e.started, e.ended, e.error, e.version, "
            "coalesce(v.template, e.template) AS template, e.event, e.texts, "
            f"coalesce(v.texts, e.texts) AS template_texts FROM {s}.executions AS e "
            f"LEFT JOIN {s}.versions AS v USING (version) WHERE e.exec_id = $1"
        )
        self.version_rows = (
            f"SELECT version, template_id, template, texts FROM {s}.versions "
            "WHERE ($1::text IS NULL OR template_id = $1) AND ($2::text IS NULL OR version = $2) "
            "ORDER BY created, version"
        )
        self.load_tasks = (
            f"SELECT task_id, task_exec_id, state, started, ended, data, error, texts FROM {s}.tasks WHERE exec_id = $1"
        )
        self.admit = f"SELECT decision, waits FROM {s}.admit({', '.join(f'${i}' for i in range(1, 16))})"
        self.publish = f"SELECT {s}.publish($1, $2, $3, $4, $5, $6, $7)"
        self.event_cursor = f"SELECT coalesce(max(id), 0) FROM {s}.events"
        self.events_after = (
            f"SELECT id, origin, topic, data, texts FROM {s}.events WHERE id > $1 AND origin IS DISTINCT FROM $2 "
            "ORDER BY id LIMIT 1000"
        )
        self.prune_events = f"DELETE FROM {s}.events WHERE at < now() - make_interval(secs => $1)"
        self.write_events = f"SELECT {s}.write_batch_events(" + ", ".join(f"${n}" for n in range(1, 28)) + ")"
