-- pkmanager schema version 9: a claim records the keys it takes in the
-- audit trail in its own transaction (see store.Store.Claim), so that a
-- crash never leaves an assignment without its event. pkm_claim_audit takes
-- pkm_claim's parameters and the event's action, reason and actor. It locks
-- the pod's row as pkm_claim does first (inserting it when missing, and
-- deleting it again when the call leaves it empty, as pkm_claim would),
-- notes the keys the pod holds, runs pkm_claim, and appends one event with
-- the keys the pod holds afterwards and did not before: the keys this call
-- took, not those of a concurrent claim of the pod that committed first.
--
-- Events written by transactions no longer take their sequence number
-- there: the counter row, locked from the first append to the commit,
-- made every writing transaction wait for the one before it to commit
-- (one fsync at a time for all claims). They go to pkm_audit_pending, which
-- writers only insert into; pkm_audit_sequence moves the committed pending
-- events into pkm_audit under the next numbers, in pending order, one
-- sequencer at a time (it locks the counter for its own short
-- transaction). Readers of the trail run it first, so numbers are handed
-- out only to committed events, in the order they are sequenced, and a
-- page read after n never misses an event numbered below n.
CREATE TABLE pkm_audit_pending (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time    timestamptz NOT NULL,
    action  text        NOT NULL CHECK (action <> ''),
    pod     text        NOT NULL DEFAULT '',
    pod_uid text        NOT NULL DEFAULT '',
    pubkeys bytea[]     NOT NULL DEFAULT '{}',
    reason  text        NOT NULL DEFAULT '',
    actor   text        NOT NULL DEFAULT ''
);

CREATE FUNCTION pkm_audit_sequence() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
    v_n    bigint;
BEGIN
    SELECT s.last INTO v_last FROM pkm_audit_seq s FOR UPDATE;
    WITH moved AS (DELETE FROM pkm_audit_pending RETURNING *),
        ins AS (INSERT INTO pkm_audit (seq, time, action, pod, pod_uid, pubkeys, reason, actor)
            SELECT v_last + row_number() OVER (ORDER BY m.id), m.time, m.action, m.pod, m.pod_uid, m.pubkeys, m.reason, m.actor
            FROM moved m RETURNING 1)
    SELECT count(*) INTO v_n FROM ins;
    IF v_n > 0 THEN
        UPDATE pkm_audit_seq SET last = v_last + v_n;
    END IF;
    RETURN v_last + v_n;
END
$$;

CREATE FUNCTION pkm_claim_audit(p_pod text, p_uid text, p_want integer, p_now timestamptz, p_aon boolean, p_retries integer,
    p_token text, p_until timestamptz, p_strict boolean, p_active text[], p_activating text[],
    p_action text, p_reason text, p_actor text)
RETURNS TABLE (pubkey bytea, state text, origin text, derivation_index bigint, pod text, pod_uid text,
    last_pod text, since timestamptz, cooling_until timestamptz, released_at timestamptz,
    retired_reason text, created_at timestamptz, sealed_secret bytea, recycled integer, available integer,
    res_token text, res_count integer, res_until timestamptz, contended boolean,
    activating integer, ready boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_inserted boolean;
    v_before   bytea[];
    v_taken    bytea[];
BEGIN
    INSERT INTO pkm_pods (name, uid) VALUES (p_pod, p_uid) ON CONFLICT (name) DO NOTHING;
    v_inserted := FOUND;
    PERFORM 1 FROM pkm_pods p WHERE p.name = p_pod FOR UPDATE;
    SELECT coalesce(array_agg(k.pubkey), '{}') INTO v_before FROM pkm_keys k WHERE k.pod = p_pod AND k.state = 'assigned';
    RETURN QUERY SELECT * FROM pkm_claim(p_pod, p_uid, p_want, p_now, p_aon, p_retries, p_token, p_until, p_strict,
        p_active, p_activating);
    SELECT array_agg(k.pubkey ORDER BY k.pubkey) INTO v_taken FROM pkm_keys k
        WHERE k.pod = p_pod AND k.state = 'assigned' AND NOT (k.pubkey = ANY (v_before));
    IF v_taken IS NOT NULL THEN
        INSERT INTO pkm_audit_pending (time, action, pod, pod_uid, pubkeys, reason, actor)
            VALUES (p_now, p_action, p_pod, p_uid, v_taken, p_reason, p_actor);
    END IF;
    IF v_inserted THEN
        DELETE FROM pkm_pods p WHERE p.name = p_pod AND p.res_token IS NULL
            AND NOT EXISTS (SELECT 1 FROM pkm_keys k WHERE k.pod = p_pod);
    END IF;
END
$$;
