-- Write hardening (issue 9): podium_apply_scores judges a first write of an `asc` game.
-- The suspicious-jump check summed improvements from a previous value, and an asc
-- (time-trial) first write moves "up" from nothing, so it was never flagged however
-- impossible. Now a first write improves from the game's worst allowed value (see
-- docs/design.md, "Suspicious jumps"); the rest of the function is as in 002.

-- Apply a batch of writes in order, in the caller's transaction.
-- Statuses: ok, duplicate, conflict, no_game, no_user, voided, no_action,
-- out_of_bounds, overflow, suspicious. Only `ok` inserts an event; b_* list the
-- board rows it changed (their new state), in order, for the Redis apply.
-- Operators: best keeps the better value per the order, sum adds, last replaces,
-- decr subtracts; on a period board over that period's writes only.
CREATE OR REPLACE FUNCTION podium_apply_scores(
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
    baseline bigint;
    sgn int;
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
            -- A user's first write improves from the worst value a first write can make:
            -- the input bound on the bad side (min_score for desc, max_score for asc;
            -- negated and swapped for decr, whose value is minus the input). Without that
            -- bound desc starts from 0, and asc has no finite worst value: its first write
            -- is then not judged (improvement NULL).
            sgn := CASE WHEN descending THEN 1 ELSE -1 END;
            baseline := CASE
                WHEN descending AND g.operator = 'decr' THEN coalesce(-g.max_score, 0)
                WHEN descending THEN coalesce(g.min_score, 0)
                WHEN g.operator = 'decr' THEN -g.min_score
                ELSE g.max_score END;
            improvement := (news[1] - coalesce(olds[1], baseline)) * sgn;
            IF improvement > 0 THEN
                -- The same rule over the window's earlier events (a NULL gain is none).
                SELECT coalesce(sum(gain), 0) INTO window_sum FROM (
                    SELECT (e.value_after - coalesce(e.value_before, baseline)) * sgn AS gain
                      FROM score_events e
                     WHERE e.user_id = p_users[i] AND e.game_id = g.id AND e.voided_at IS NULL
                       AND e.created_at > p_created[i] - make_interval(secs => g.delta_window_s)
                ) w WHERE gain > 0;
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
