-- pkmanager schema version 10: pkm_take and pkm_claim as in version 8, with
-- each pkm_ready filter written (p_active IS NULL OR pkm_ready(...)). The
-- rule stays in pkm_ready; the guard only spares the call when the claim
-- has no RequireActive filter (p_active NULL), the default. pkm_ready is an
-- SQL function with a subquery, so PostgreSQL cannot inline it: it was
-- called for every row a pick or count walked (about 20 per claim at 32
-- concurrent claims: keys other claims hold locked or took since the
-- statement began), and parsed and planned its body again in every
-- statement that called it. Measured with pgbench running pkm_claim_audit
-- at 32 clients: 820-870 claims/s before, 1,120-1,140 after (see
-- docs/benchmarks.md). pkm_claim_audit (version 9) calls these by name, so
-- it needs no change.

CREATE OR REPLACE FUNCTION pkm_take(p_pod text, p_uid text, p_need integer, p_now timestamptz, p_retries integer,
    p_active text[], OUT taken integer, OUT contended boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_n       integer;
    v_attempt integer := 0;
BEGIN
    taken := 0;
    contended := false;
    LOOP
        WITH picked AS (
            SELECT k.pubkey FROM pkm_keys k WHERE k.state = 'available' AND (p_active IS NULL OR pkm_ready(k.pubkey, p_active))
            ORDER BY k.released_at, k.created_at, k.pubkey LIMIT p_need - taken FOR UPDATE OF k SKIP LOCKED)
        UPDATE pkm_keys k SET state = 'assigned', pod = p_pod, pod_uid = p_uid, last_pod = p_pod,
            since = p_now, cooling_until = NULL
        FROM picked WHERE k.pubkey = picked.pubkey AND k.state = 'available';
        GET DIAGNOSTICS v_n = ROW_COUNT;
        taken := taken + v_n;
        IF taken < p_need THEN
            WITH picked AS (
                SELECT k.pubkey FROM pkm_keys k WHERE k.state = 'cooling-down' AND k.cooling_until <= p_now
                    AND (p_active IS NULL OR pkm_ready(k.pubkey, p_active))
                ORDER BY k.cooling_until, k.pubkey LIMIT p_need - taken FOR UPDATE OF k SKIP LOCKED)
            UPDATE pkm_keys k SET state = 'assigned', pod = p_pod, pod_uid = p_uid, last_pod = p_pod,
                since = p_now, cooling_until = NULL
            FROM picked WHERE k.pubkey = picked.pubkey AND k.state = 'cooling-down' AND k.cooling_until <= p_now;
            GET DIAGNOSTICS v_n = ROW_COUNT;
            taken := taken + v_n;
        END IF;
        EXIT WHEN taken >= p_need;
        -- What is still claimable is locked by another transaction (the
        -- keys this one took are assigned in its own view).
        PERFORM 1 FROM pkm_keys k
            WHERE (k.state = 'available' OR (k.state = 'cooling-down' AND k.cooling_until <= p_now))
                AND (p_active IS NULL OR pkm_ready(k.pubkey, p_active)) LIMIT 1;
        EXIT WHEN NOT FOUND;
        IF v_attempt >= p_retries THEN
            contended := true;
            EXIT;
        END IF;
        v_attempt := v_attempt + 1;
        PERFORM pg_sleep(least(v_attempt, 10) / 1000.0);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pkm_claim(p_pod text, p_uid text, p_want integer, p_now timestamptz, p_aon boolean, p_retries integer,
    p_token text, p_until timestamptz, p_strict boolean, p_active text[], p_activating text[])
RETURNS TABLE (pubkey bytea, state text, origin text, derivation_index bigint, pod text, pod_uid text,
    last_pod text, since timestamptz, cooling_until timestamptz, released_at timestamptz,
    retired_reason text, created_at timestamptz, sealed_secret bytea, recycled integer, available integer,
    res_token text, res_count integer, res_until timestamptz, contended boolean,
    activating integer, ready boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_row_uid   text;
    v_res_tok   text;
    v_res_cnt   integer;
    v_res_until timestamptz;
    v_inserted  boolean := false;
    v_held      integer;
    v_holds     boolean;
    v_other     boolean;
    v_reserved  integer := 0;
    v_rec       text;
    v_uid       text;
    v_fill      boolean;
    v_need      integer;
    v_avail     integer := 0;
    v_taken     integer := 0;
    v_contended boolean := false;
    v_held_back boolean := false;
    v_new_tok   text;
    v_new_cnt   integer;
    v_new_until timestamptz;
    v_changed   boolean := false;
    v_activ     integer := 0;
    v_need0     integer;
BEGIN
    -- Lock the pod's row (every change to a pod's set does so first).
    SELECT p.uid, p.res_token, p.res_count, p.res_until INTO v_row_uid, v_res_tok, v_res_cnt, v_res_until
        FROM pkm_pods p WHERE p.name = p_pod FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO pkm_pods (name, uid) VALUES (p_pod, p_uid) ON CONFLICT (name) DO NOTHING;
        v_inserted := FOUND;
        SELECT p.uid, p.res_token, p.res_count, p.res_until INTO v_row_uid, v_res_tok, v_res_cnt, v_res_until
            FROM pkm_pods p WHERE p.name = p_pod FOR UPDATE;
    END IF;
    SELECT count(*) INTO v_held FROM pkm_keys k WHERE k.pod = p_pod;
    -- Another caller's live reservation counts as keys in progress. For the
    -- UID rules the pod's keys include its reservation while live or the
    -- caller's own.
    v_other := v_res_tok IS NOT NULL AND p_now < v_res_until AND v_res_tok <> p_token;
    v_holds := v_held > 0 OR (v_res_tok IS NOT NULL AND (p_now < v_res_until OR v_res_tok = p_token));
    IF v_other THEN
        v_reserved := v_res_cnt;
    END IF;
    v_rec := CASE WHEN v_holds THEN v_row_uid ELSE '' END;
    IF p_uid <> '' AND v_rec <> '' AND v_rec <> p_uid THEN
        RAISE EXCEPTION 'claim for pod %: its keys are held under pod UID %, not %', p_pod, v_rec, p_uid
            USING ERRCODE = 'PKUID';
    END IF;
    IF p_strict AND p_uid <> '' AND v_holds AND v_rec = '' THEN
        RAISE EXCEPTION 'claim for pod %: its keys were recorded without a pod UID, so an earlier pod of that name may hold them; the pod watcher decides (the caller is pod UID %)', p_pod, p_uid
            USING ERRCODE = 'PKUID';
    END IF;
    IF v_rec <> '' THEN
        v_uid := v_rec;
        v_fill := false;
    ELSE
        v_uid := p_uid;
        v_fill := p_uid <> '' AND v_holds;
    END IF;
    v_need := p_want - v_held - v_reserved;
    v_need0 := v_need;
    IF v_need > 0 AND p_aon THEN
        -- Claimable keys locked by others count: if they are too few even
        -- so, the shortfall is real.
        SELECT (SELECT count(*) FROM (SELECT 1 FROM pkm_keys k WHERE k.state = 'available'
                    AND (p_active IS NULL OR pkm_ready(k.pubkey, p_active)) LIMIT v_need) a)
             + (SELECT count(*) FROM (SELECT 1 FROM pkm_keys k WHERE k.state = 'cooling-down'
                    AND k.cooling_until <= p_now AND (p_active IS NULL OR pkm_ready(k.pubkey, p_active)) LIMIT v_need) c)
          INTO v_avail;
        IF v_avail < v_need THEN
            v_need := 0;   -- held back: nothing changes, no UID fill-in either
            v_fill := false;
            v_held_back := true;
        ELSE
            v_avail := 0;
        END IF;
    END IF;
    IF v_need > 0 AND p_aon THEN
        BEGIN
            IF v_row_uid <> v_uid THEN
                UPDATE pkm_pods SET uid = v_uid WHERE name = p_pod;
            END IF;
            SELECT t.taken, t.contended INTO v_taken, v_contended FROM pkm_take(p_pod, v_uid, v_need, p_now, p_retries, p_active) t;
            IF v_taken < v_need THEN
                RAISE EXCEPTION USING ERRCODE = 'PKAON';
            END IF;
        EXCEPTION WHEN SQLSTATE 'PKAON' THEN
            -- The pool is short, or other transactions hold part of it
            -- locked (contended: the caller claims again): all or nothing
            -- means nothing (the block's changes are undone).
            v_avail := v_taken;
            v_taken := 0;
            v_fill := false;
            v_held_back := true;
        END;
    ELSE
        IF (v_need > 0 OR v_fill) AND v_row_uid <> v_uid THEN
            -- The foreign key's cascade rewrites the UID of the pod's keys.
            UPDATE pkm_pods SET uid = v_uid WHERE name = p_pod;
        END IF;
        IF v_need > 0 THEN
            SELECT t.taken, t.contended INTO v_taken, v_contended FROM pkm_take(p_pod, v_uid, v_need, p_now, p_retries, p_active) t;
        END IF;
    END IF;
    -- With p_active, claimable keys whose validators are still activating
    -- count, up to what the pod lacks, as keys in progress (held back, the
    -- claim would have taken v_avail).
    IF p_active IS NOT NULL AND v_need0 - greatest(v_taken, v_avail) > 0 THEN
        SELECT count(*) INTO v_activ FROM (SELECT 1 FROM pkm_keys k LEFT JOIN pkm_validators v ON v.pubkey = k.pubkey
            WHERE (k.state = 'available' OR (k.state = 'cooling-down' AND k.cooling_until <= p_now))
              AND (v.pubkey IS NULL OR (v.status = ANY (p_activating) AND NOT v.slashed))
            LIMIT v_need0 - greatest(v_taken, v_avail)) a;
    END IF;
    -- The reservation after the call: the caller reserves what the pod
    -- still lacks unless another caller's live reservation stands or the
    -- claim was contended (the pool may still cover it); an expired one,
    -- or the caller's own that is no longer needed, goes when the call
    -- changes the pod.
    v_new_tok := v_res_tok;
    v_new_cnt := v_res_cnt;
    v_new_until := v_res_until;
    IF v_held_back OR v_other THEN
        NULL;
    ELSIF v_contended THEN
        -- The pod still lacks keys: the caller's own reservation stays
        -- for its next claim to settle; an expired one goes if the pod
        -- changed.
        IF v_res_tok IS NOT NULL AND p_now >= v_res_until AND (v_taken > 0 OR v_fill) THEN
            v_new_tok := NULL;
            v_new_cnt := NULL;
            v_new_until := NULL;
            v_changed := true;
        END IF;
    ELSIF p_token <> '' AND v_need - v_taken - v_activ > 0 THEN
        v_new_tok := p_token;
        v_new_cnt := v_need - v_taken - v_activ;
        v_new_until := p_until;
        v_changed := true;
    ELSIF v_res_tok IS NOT NULL AND (p_token <> '' OR v_taken > 0 OR v_fill) THEN
        v_new_tok := NULL;
        v_new_cnt := NULL;
        v_new_until := NULL;
        v_changed := true;
    END IF;
    IF v_changed THEN
        UPDATE pkm_pods SET res_token = v_new_tok, res_count = v_new_cnt, res_until = v_new_until WHERE name = p_pod;
    END IF;
    IF v_inserted AND v_taken = 0 AND v_new_tok IS NULL THEN
        DELETE FROM pkm_pods WHERE name = p_pod AND NOT EXISTS (SELECT 1 FROM pkm_keys k WHERE k.pod = p_pod);
    END IF;
    IF NOT v_other AND NOT (v_new_tok IS NOT NULL AND p_now < v_new_until) THEN
        v_new_tok := NULL;
        v_new_cnt := NULL;
        v_new_until := NULL;
    END IF;
    RETURN QUERY SELECT NULL::bytea, NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::text, NULL::text,
        NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::timestamptz, NULL::bytea,
        v_taken, v_avail, v_new_tok, v_new_cnt, v_new_until, v_contended, v_activ, NULL::boolean;
    RETURN QUERY SELECT k.pubkey, k.state, k.origin, k.derivation_index, k.pod, k.pod_uid, k.last_pod,
        k.since, k.cooling_until, k.released_at, k.retired_reason, k.created_at,
        CASE WHEN k.state = 'assigned' THEN k.sealed_secret END, 0, 0, NULL::text, NULL::integer, NULL::timestamptz,
        false, 0, p_active IS NULL OR pkm_ready(k.pubkey, p_active)
        FROM pkm_keys k WHERE k.pod = p_pod ORDER BY k.pubkey;
END
$$;
