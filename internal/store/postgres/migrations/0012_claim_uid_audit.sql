-- pkmanager schema version 12: a claim that writes the pod's UID on the keys
-- the pod held without one (an empty UID filled in, see store.PodUID)
-- records that in the audit trail in its own transaction, before the keys
-- it takes (store.Store.Claim, store.UIDAdoptedEvent): pkm_claim_audit
-- takes the event's action and reason as two more parameters. It notes the
-- pod's UID and its keys (assigned and pending) once it holds the pod's
-- row, runs pkm_claim, and appends the event when the UID was empty, the
-- pod held keys and pkm_claim recorded p_uid (it does not when it fails on
-- the UID rules or all-or-nothing holds it back). Otherwise as version 9.
DROP FUNCTION pkm_claim_audit(text, text, integer, timestamptz, boolean, integer, text, timestamptz, boolean, text[], text[],
    text, text, text);

CREATE FUNCTION pkm_claim_audit(p_pod text, p_uid text, p_want integer, p_now timestamptz, p_aon boolean, p_retries integer,
    p_token text, p_until timestamptz, p_strict boolean, p_active text[], p_activating text[],
    p_action text, p_reason text, p_actor text, p_uid_action text, p_uid_reason text)
RETURNS TABLE (pubkey bytea, state text, origin text, derivation_index bigint, pod text, pod_uid text,
    last_pod text, since timestamptz, cooling_until timestamptz, released_at timestamptz,
    retired_reason text, created_at timestamptz, sealed_secret bytea, recycled integer, available integer,
    res_token text, res_count integer, res_until timestamptz, contended boolean,
    activating integer, ready boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_inserted  boolean;
    v_uid       text;
    v_held      bytea[];
    v_before    bytea[];
    v_taken     bytea[];
BEGIN
    INSERT INTO pkm_pods (name, uid) VALUES (p_pod, p_uid) ON CONFLICT (name) DO NOTHING;
    v_inserted := FOUND;
    SELECT p.uid INTO v_uid FROM pkm_pods p WHERE p.name = p_pod FOR UPDATE;
    SELECT array_agg(k.pubkey ORDER BY k.pubkey), coalesce(array_agg(k.pubkey) FILTER (WHERE k.state = 'assigned'), '{}')
        INTO v_held, v_before FROM pkm_keys k WHERE k.pod = p_pod;
    RETURN QUERY SELECT * FROM pkm_claim(p_pod, p_uid, p_want, p_now, p_aon, p_retries, p_token, p_until, p_strict,
        p_active, p_activating);
    IF v_uid = '' AND p_uid <> '' AND v_held IS NOT NULL
        AND EXISTS (SELECT 1 FROM pkm_pods p WHERE p.name = p_pod AND p.uid = p_uid) THEN
        INSERT INTO pkm_audit_pending (time, action, pod, pod_uid, pubkeys, reason, actor)
            VALUES (p_now, p_uid_action, p_pod, p_uid, v_held, p_uid_reason, p_actor);
    END IF;
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
