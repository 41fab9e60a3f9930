-- Games, the score event log (the system of record) and the materialised boards.
-- See docs/design.md for the contract; podium_apply_scores applies a whole batch of
-- writes in one round trip (group commit).

CREATE TABLE games (
    id             text PRIMARY KEY CHECK (id ~ '^[a-z0-9-]{1,40}$' AND id <> 'global'),
    name           text NOT NULL,
    sort_order     text NOT NULL DEFAULT 'desc' CHECK (sort_order IN ('desc', 'asc')),
    operator       text NOT NULL DEFAULT 'best' CHECK (operator IN ('best', 'sum', 'last', 'decr')),
    policy         text NOT NULL DEFAULT 'client'
                   CHECK (policy IN ('client', 'actions', 'authoritative')),
    min_score      bigint,
    max_score      bigint,
    -- Suspicious-jump guard: more improvement than max_delta within delta_window_s.
    max_delta      bigint CHECK (max_delta IS NULL OR max_delta >= 0),
    delta_window_s integer NOT NULL DEFAULT 60 CHECK (delta_window_s > 0),
    -- Signed actions: a game server signs each write with this key.
    hmac_key       text,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE game_actions (
    game_id text NOT NULL REFERENCES games (id) ON DELETE CASCADE,
    action  text NOT NULL,
    points  bigint NOT NULL,
    PRIMARY KEY (game_id, action)
);

CREATE TABLE score_events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid NOT NULL,
    user_id      bigint NOT NULL REFERENCES users (id),
    game_id      text NOT NULL REFERENCES games (id),
    kind         text NOT NULL CHECK (kind IN ('score', 'action')),
    input        bigint,
    action       text,
    delta        bigint NOT NULL,
    value_before bigint,
    value_after  bigint NOT NULL,
    created_at   timestamptz NOT NULL,
    client_addr  text,
    credential   text,
    payload_hash text NOT NULL,
    response     jsonb NOT NULL,
    voided_at    timestamptz
);
CREATE UNIQUE INDEX score_events_event_id_key ON score_events (event_id);
-- Serves per-user lookups and the suspicious-jump window.
CREATE INDEX score_events_user_idx ON score_events (user_id, game_id, created_at);
CREATE INDEX score_events_game_time_idx ON score_events (game_id, created_at);

-- The ranks of each accepted write's first response, for replays. Unlogged: cheap to
-- write, and after a crash a replay merely answers without ranks.
CREATE UNLOGGED TABLE score_ranks (
    seq           bigint PRIMARY KEY,
    rank          bigint,
    previous_rank bigint
);

-- Writes refused as suspicious jumps: kept apart so the log holds accepted writes only.
CREATE TABLE score_flags (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid NOT NULL,
    user_id     bigint NOT NULL,
    game_id     text NOT NULL,
    kind        text NOT NULL,
    input       bigint,
    action      text,
    delta       bigint NOT NULL,
    window_sum  bigint NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL,
    client_addr text,
    credential  text
);
CREATE INDEX score_flags_user_idx ON score_flags (user_id, created_at);

CREATE TABLE board_values (
    game_id      text NOT NULL,
    period       text NOT NULL CHECK (period IN ('all', 'day', 'week', 'month')),
    period_start date NOT NULL,
    user_id      bigint NOT NULL,
    value        bigint NOT NULL,
    reached_seq  bigint NOT NULL,
    reached_at   timestamptz NOT NULL,
    last_seq     bigint NOT NULL,
    PRIMARY KEY (game_id, period, period_start, user_id)
);
CREATE INDEX board_values_user_idx ON board_values (user_id);

-- Apply a batch of writes in order, in the caller's transaction.
-- Statuses: ok, duplicate, conflict, no_game, no_user, voided, no_action,
-- out_of_bounds, overflow, suspicious. Only `ok` inserts an event; b_* list the
-- board rows it changed (their new state), in order, for the Redis apply.
-- Operators: best keeps the better value per the order, sum adds, last replaces,
-- decr subtracts; on a period board over that period's writes only.
CREATE FUNCTION podium_apply_scores(
    p_event_ids uuid[], p_users bigint[], p_games text[], p_kinds text[],
    p_inputs bigint[], p_actions text[], p_hashes text[], p_created timestamptz[],
    p_days date[], p_weeks date[], p_months date[], p_addrs text[], p_creds text[]
) RETURNS TABLE (
    idx int, status text, seq bigint, value_before bigint, value_after bigint,
    response jsonb, b_games text[], b_periods text[], b_starts date[], b_values bigint[],
    b_reached bigint[], b_last bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    max_abs constant bigint := 9007199254740991;  -- 2^53 - 1: exact in a double
    periods constant text[] := ARRAY['all', 'day', 'week', 'month'];
    n int := coalesce(array_length(p_event_ids, 1), 0);
    u bigint;
    g games%ROWTYPE;
    prev score_events%ROWTYPE;
    any_seen boolean;
    checked_users bigint[] := '{}';
    user_voided timestamptz;
    v_input bigint;
    descending boolean;
    starts date[];
    olds bigint[];
    news bigint[];
    golds bigint[];
    greached bigint[];
    gnews bigint[];
    k int;
    cur bigint;
    cur_reached bigint;
    improvement bigint;
    window_sum bigint;
    new_seq bigint;
    resp jsonb;
    bad boolean;
BEGIN
    -- Every row of a user (its game rows and its global rows) is written under this
    -- lock, taken in user order so two batches never deadlock: a row's last_seq then
    -- grows in commit order, which is what the version-guarded Redis apply needs.
    FOR u IN SELECT DISTINCT x FROM unnest(p_users) AS x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('podium:user:' || u::text, 0));
    END LOOP;
    -- Replays are rare: look each event up only when the batch holds one.
    any_seen := EXISTS (SELECT 1 FROM score_events e WHERE e.event_id = ANY (p_event_ids));

    FOR i IN 1..n LOOP
        idx := i; seq := NULL; value_before := NULL; value_after := NULL; response := NULL;
        b_games := '{}'; b_periods := '{}'; b_starts := '{}'; b_values := '{}';
        b_reached := '{}'; b_last := '{}';

        IF any_seen THEN
            SELECT * INTO prev FROM score_events e WHERE e.event_id = p_event_ids[i];
            IF FOUND THEN
                status := CASE WHEN prev.payload_hash = p_hashes[i] THEN 'duplicate'
                               ELSE 'conflict' END;
                seq := prev.seq; value_before := prev.value_before;
                value_after := prev.value_after;
                response := prev.response || coalesce((SELECT jsonb_build_object(
                    'rank', r.rank, 'previous_rank', r.previous_rank)
                    FROM score_ranks r WHERE r.seq = prev.seq), '{}');
                RETURN NEXT; CONTINUE;
            END IF;
        END IF;

        IF g.id IS DISTINCT FROM p_games[i] THEN
            SELECT * INTO g FROM games WHERE id = p_games[i];
            IF NOT FOUND THEN status := 'no_game'; RETURN NEXT; CONTINUE; END IF;
        END IF;
        IF NOT (p_users[i] = ANY (checked_users)) THEN
            SELECT voided_at INTO user_voided FROM users WHERE id = p_users[i];
            IF NOT FOUND THEN status := 'no_user'; RETURN NEXT; CONTINUE; END IF;
            IF user_voided IS NOT NULL THEN status := 'voided'; RETURN NEXT; CONTINUE; END IF;
            checked_users := checked_users || p_users[i];
        END IF;

        IF p_kinds[i] = 'action' THEN
            SELECT points INTO v_input FROM game_actions a
             WHERE a.game_id = g.id AND a.action = p_actions[i];
            IF NOT FOUND THEN status := 'no_action'; RETURN NEXT; CONTINUE; END IF;
        ELSE
            v_input := p_inputs[i];
        END IF;
        IF (g.min_score IS NOT NULL AND v_input < g.min_score)
           OR (g.max_score IS NOT NULL AND v_input > g.max_score)
           OR abs(v_input) > max_abs THEN
            status := 'out_of_bounds'; RETURN NEXT; CONTINUE;
        END IF;

        descending := g.sort_order = 'desc';
        starts := ARRAY['1970-01-01'::date, p_days[i], p_weeks[i], p_months[i]];
        olds := '{NULL,NULL,NULL,NULL}';
        news := '{NULL,NULL,NULL,NULL}';
        FOR k, cur IN
            SELECT array_position(periods, bv.period), bv.value FROM board_values bv
             WHERE bv.game_id = g.id AND bv.user_id = p_users[i]
               AND (bv.period, bv.period_start) IN (('all', starts[1]), ('day', starts[2]),
                                                    ('week', starts[3]), ('month', starts[4]))
        LOOP
            olds[k] := cur;
        END LOOP;
        bad := false;
        FOR k IN 1..4 LOOP
            news[k] := CASE g.operator
                WHEN 'best' THEN CASE WHEN olds[k] IS NULL THEN v_input
                                      WHEN descending THEN greatest(olds[k], v_input)
                                      ELSE least(olds[k], v_input) END
                WHEN 'sum' THEN coalesce(olds[k], 0) + v_input
                WHEN 'last' THEN v_input
                ELSE coalesce(olds[k], 0) - v_input END;
            IF abs(news[k]) > max_abs THEN bad := true; END IF;
        END LOOP;
        IF bad THEN status := 'overflow'; RETURN NEXT; CONTINUE; END IF;

        -- The global board sums a user's values over desc games, period by period.
        IF descending THEN
            golds := '{NULL,NULL,NULL,NULL}';
            greached := '{NULL,NULL,NULL,NULL}';
            gnews := '{NULL,NULL,NULL,NULL}';
            FOR k, cur, cur_reached IN
                SELECT array_position(periods, bv.period), bv.value, bv.reached_seq
                  FROM board_values bv
                 WHERE bv.game_id = 'global' AND bv.user_id = p_users[i]
                   AND (bv.period, bv.period_start) IN (('all', starts[1]), ('day', starts[2]),
                                                        ('week', starts[3]), ('month', starts[4]))
            LOOP
                golds[k] := cur; greached[k] := cur_reached;
            END LOOP;
            FOR k IN 1..4 LOOP
                IF olds[k] IS DISTINCT FROM news[k] THEN
                    gnews[k] := coalesce(golds[k], 0) + news[k] - coalesce(olds[k], 0);
                    IF abs(gnews[k]) > max_abs THEN bad := true; END IF;
                END IF;
            END LOOP;
            IF bad THEN status := 'overflow'; RETURN NEXT; CONTINUE; END IF;
        END IF;

        IF g.max_delta IS NOT NULL THEN
            improvement := (news[1] - coalesce(olds[1], 0))
                           * CASE WHEN descending THEN 1 ELSE -1 END;
            IF improvement > 0 THEN
                SELECT coalesce(sum(e.delta * CASE WHEN descending THEN 1 ELSE -1 END), 0)
                  INTO window_sum FROM score_events e
                 WHERE e.user_id = p_users[i] AND e.game_id = g.id AND e.voided_at IS NULL
                   AND e.created_at > p_created[i] - make_interval(secs => g.delta_window_s)
                   AND e.delta * CASE WHEN descending THEN 1 ELSE -1 END > 0;
                IF window_sum + improvement > g.max_delta THEN
                    INSERT INTO score_flags (event_id, user_id, game_id, kind, input, action,
                        delta, window_sum, reason, created_at, client_addr, credential)
                    VALUES (p_event_ids[i], p_users[i], g.id, p_kinds[i], v_input,
                        p_actions[i], news[1] - coalesce(olds[1], 0), window_sum, 'max_delta',
                        p_created[i], p_addrs[i], p_creds[i]);
                    status := 'suspicious'; RETURN NEXT; CONTINUE;
                END IF;
            END IF;
        END IF;

        resp := jsonb_build_object(
            'game', g.id, 'user_id', p_users[i], 'score', news[1],
            'delta', news[1] - coalesce(olds[1], 0),
            'rank', NULL, 'previous_rank', NULL, 'duplicate', false);
        new_seq := NULL;
        INSERT INTO score_events AS e (event_id, user_id, game_id, kind, input, action, delta,
            value_before, value_after, created_at, client_addr, credential, payload_hash,
            response)
        VALUES (p_event_ids[i], p_users[i], g.id, p_kinds[i], v_input, p_actions[i],
            news[1] - coalesce(olds[1], 0), olds[1], news[1], p_created[i], p_addrs[i],
            p_creds[i], p_hashes[i], resp)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING e.seq INTO new_seq;
        IF new_seq IS NULL THEN
            -- The same event id earlier in this batch, or committed by another
            -- transaction meanwhile.
            SELECT * INTO prev FROM score_events e WHERE e.event_id = p_event_ids[i];
            status := CASE WHEN prev.payload_hash = p_hashes[i] THEN 'duplicate'
                           ELSE 'conflict' END;
            seq := prev.seq; value_before := prev.value_before;
            value_after := prev.value_after;
            response := prev.response || coalesce((SELECT jsonb_build_object(
                'rank', r.rank, 'previous_rank', r.previous_rank)
                FROM score_ranks r WHERE r.seq = prev.seq), '{}');
            RETURN NEXT; CONTINUE;
        END IF;
        seq := new_seq;
        value_before := olds[1];
        value_after := news[1];
        response := resp;

        -- reached_seq moves only when the value changes: ties keep the earlier.
        INSERT INTO board_values AS bv (game_id, period, period_start, user_id, value,
            reached_seq, reached_at, last_seq)
        SELECT g.id, periods[j], starts[j], p_users[i], news[j], new_seq, p_created[i], new_seq
          FROM generate_series(1, 4) AS j
         WHERE olds[j] IS DISTINCT FROM news[j]
        ON CONFLICT (game_id, period, period_start, user_id) DO UPDATE
            SET value = EXCLUDED.value, reached_seq = EXCLUDED.reached_seq,
                reached_at = EXCLUDED.reached_at, last_seq = EXCLUDED.last_seq;
        IF descending THEN
            INSERT INTO board_values AS bv (game_id, period, period_start, user_id, value,
                reached_seq, reached_at, last_seq)
            SELECT 'global', periods[j], starts[j], p_users[i], gnews[j], new_seq,
                   p_created[i], new_seq
              FROM generate_series(1, 4) AS j
             WHERE olds[j] IS DISTINCT FROM news[j]
            ON CONFLICT (game_id, period, period_start, user_id) DO UPDATE
                SET value = EXCLUDED.value,
                    reached_seq = CASE WHEN EXCLUDED.value = bv.value THEN bv.reached_seq
                                       ELSE EXCLUDED.reached_seq END,
                    reached_at = CASE WHEN EXCLUDED.value = bv.value THEN bv.reached_at
                                      ELSE EXCLUDED.reached_at END,
                    last_seq = EXCLUDED.last_seq;
        END IF;
        FOR k IN 1..4 LOOP
            IF olds[k] IS DISTINCT FROM news[k] THEN
                b_games := b_games || g.id; b_periods := b_periods || periods[k];
                b_starts := b_starts || starts[k]; b_values := b_values || news[k];
                b_reached := b_reached || new_seq; b_last := b_last || new_seq;
                IF descending THEN
                    b_games := b_games || 'global'::text; b_periods := b_periods || periods[k];
                    b_starts := b_starts || starts[k]; b_values := b_values || gnews[k];
                    b_reached := b_reached || CASE WHEN gnews[k] = golds[k] THEN greached[k]
                                                   ELSE new_seq END;
                    b_last := b_last || new_seq;
                END IF;
            END IF;
        END LOOP;
        status := 'ok';
        RETURN NEXT;
    END LOOP;
END $$;
