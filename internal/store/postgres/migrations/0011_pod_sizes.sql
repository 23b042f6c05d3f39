-- pkmanager schema version 11: how many keys each pod has under its name
-- (pkm_keys.pod set: assigned to it, or pending-deposit intended for it),
-- kept in pkm_pod_sizes by triggers on pkm_keys, so that Store.PodSizes
-- reads one row per pod instead of counting every key (the streamed JSON of
-- /assignments waits for it before its first byte: 333 ms at 1,000,000
-- keys). The triggers are the one place the count is kept, whatever
-- statement (of this or an older pkmanager) changes a key's pod.
--
-- A pod's row is locked, until they commit, by the transactions that change
-- that pod's keys, most of which hold the pod's pkm_pods row already, so
-- transactions on different pods never wait for each other there. A pod's
-- row is deleted when its last key leaves it.
CREATE TABLE pkm_pod_sizes (
    pod  text   PRIMARY KEY,
    keys bigint NOT NULL CHECK (keys >= 0)
);

-- pkm_pod_sizes_add adds n (negative: takes away) to pod's count; the row
-- goes when it reaches 0. It never fails a statement over the count.
-- (plpgsql: its statements' plans are kept for the session.)
CREATE FUNCTION pkm_pod_sizes_add(p_pod text, p_n bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pkm_pod_sizes AS s (pod, keys) VALUES (p_pod, greatest(p_n, 0))
        ON CONFLICT (pod) DO UPDATE SET keys = greatest(s.keys + p_n, 0);
    DELETE FROM pkm_pod_sizes WHERE pod = p_pod AND keys = 0;
END
$$;

-- A key that changes pods, row by row: the WHEN clause keeps the function
-- out of every update that leaves the pod alone (deposits, statuses,
-- slashing protection).
CREATE FUNCTION pkm_pod_sizes_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.pod IS NOT NULL THEN
        PERFORM pkm_pod_sizes_add(OLD.pod, -1);
    END IF;
    IF NEW.pod IS NOT NULL THEN
        PERFORM pkm_pod_sizes_add(NEW.pod, 1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER pkm_keys_pod_sizes_update AFTER UPDATE OF pod ON pkm_keys
    FOR EACH ROW WHEN (OLD.pod IS DISTINCT FROM NEW.pod) EXECUTE FUNCTION pkm_pod_sizes_update();

-- Keys inserted or deleted, one statement at a time: a load's COPY of a
-- million keys adds once per pod, not once per key.
CREATE FUNCTION pkm_pod_sizes_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pkm_pod_sizes_add(pod, count(*)) FROM pkm_new_keys WHERE pod IS NOT NULL GROUP BY pod;
    RETURN NULL;
END
$$;
CREATE TRIGGER pkm_keys_pod_sizes_insert AFTER INSERT ON pkm_keys
    REFERENCING NEW TABLE AS pkm_new_keys FOR EACH STATEMENT EXECUTE FUNCTION pkm_pod_sizes_insert();
CREATE FUNCTION pkm_pod_sizes_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pkm_pod_sizes_add(pod, -count(*)) FROM pkm_old_keys WHERE pod IS NOT NULL GROUP BY pod;
    RETURN NULL;
END
$$;
CREATE TRIGGER pkm_keys_pod_sizes_delete AFTER DELETE ON pkm_keys
    REFERENCING OLD TABLE AS pkm_old_keys FOR EACH STATEMENT EXECUTE FUNCTION pkm_pod_sizes_delete();

-- The keys as they are: CREATE TRIGGER locked pkm_keys against writes
-- until this migration commits, so none is missed or counted twice.
INSERT INTO pkm_pod_sizes (pod, keys)
    SELECT pod, count(*) FROM pkm_keys WHERE pod IS NOT NULL GROUP BY pod;
