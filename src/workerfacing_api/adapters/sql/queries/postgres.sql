-- What only PostgreSQL says: each change in one statement, with its outbox event (data-modifying
-- CTEs commit together), concurrent claims kept apart by FOR UPDATE SKIP LOCKED, and id lists
-- passed as arrays (= ANY).
--
-- Delivered events are deleted lazily: a statement that may lease an event also deletes the
-- events this process delivered since its last statement (:done, the CTE "done") and treats them
-- as gone, which they are once it commits. A successor event is leased only by the statement
-- that deletes its predecessor, so no crash can resend an event after a later one of its job.
-- The upstream's answers (upstream_ok_at) are written lazily too, by flush_deferred.
--
-- Plans are generic (plan_cache_mode = force_generic_plan: planning costs more than running
-- these statements), made once per connection; see docs/PERFORMANCE.md.


-- name: claim_jobs
-- Claim up to :limit fitting jobs for :worker: each gets its next attempt, an attempt row and,
-- when events are recorded (:record = 1), its 'pulled' event, all in this one statement.
-- Invariant: a job is handed to exactly one worker per attempt. The jobs are locked by the
-- statement that updates them ({pick} ends in FOR UPDATE SKIP LOCKED): concurrent claims take
-- different jobs and never wait on each other, and nothing is read first and locked later.
-- The event is leased to this request (to be sent inline) only when no older event of its job
-- is pending; otherwise the dispatcher sends it after them, in order.
-- {pick}: pick_in_queue_order or pick_preferring_groups. Rows come back in no order.
WITH done AS (DELETE FROM status_events WHERE id = ANY(:done::bigint[])),
picked AS ({pick}),
claimed AS (
    UPDATE jobs
    SET status = 'pulled', worker = :worker::text, attempt = jobs.attempt + 1,
        attempted_by = jobs.attempted_by || jsonb_build_array(:worker::text),
        event_seq = jobs.event_seq + :record, last_heartbeat_at = :now, updated_at = :now,
        forwarded_at = CASE WHEN :record = 1 THEN :now ELSE jobs.forwarded_at END
    FROM picked
    WHERE jobs.id = picked.id
    RETURNING jobs.id, jobs.upstream_id, jobs.status, jobs.environment, jobs.job_group,
        jobs.priority, jobs.spec, jobs.paths_upload, jobs.worker, jobs.attempt,
        jobs.num_retries, jobs.event_seq, jobs.runtime_details, jobs.created_at,
        jobs.updated_at, jobs.last_heartbeat_at, jobs.forwarded_at, jobs.upstream_ok_at
),
attempts AS (
    INSERT INTO job_attempts (job_id, attempt, worker, pulled_at)
    SELECT id, attempt, worker, :now FROM claimed
),
events AS (
    INSERT INTO status_events (
        job_id, upstream_id, status, created_at, due_at, leased_until, attempts
    )
    SELECT c.id, c.upstream_id, 'pulled', :now::timestamptz, :now::timestamptz,
        CASE WHEN older.id IS NULL THEN :lease_until::timestamptz END, 0
    FROM claimed c
    LEFT JOIN LATERAL (
        SELECT p.id FROM status_events p
        WHERE p.job_id = c.id AND p.id <> ALL(:done::bigint[])
        LIMIT 1
    ) older ON true
    WHERE :record::int = 1
    RETURNING id, job_id, leased_until
)
SELECT claimed.*, events.id AS event_id, events.leased_until AS event_leased_until
FROM claimed LEFT JOIN events ON events.job_id = claimed.id;


-- name: pick_in_queue_order
-- The jobs a claim takes when the worker prefers no group: the first fitting ones in hand-out
-- order. Which plan is best depends on how many queued jobs fit: walk ix_jobs_queued_order and
-- stop at the first :limit when most do, range-scan ix_jobs_queued_fit and sort when few do.
-- {memory_class}, the worker's memory rounded up to a power of two, is written in as a constant
-- so that the generic plan of each class weighs that against the table's statistics (a few
-- dozen statements in all); the exact memory stays a parameter. {not_attempted} is
-- RETRY_DIFFERENT; {not_set_aside} (common.sql's worker_not_set_aside) gives a worker set aside
-- nothing, decided once per claim before any job is read.
SELECT id FROM jobs
WHERE {fits}
    AND req_memory <= {memory_class}
    AND {not_attempted}
    AND {not_set_aside}
ORDER BY priority DESC, created_at, id
LIMIT :limit
FOR UPDATE SKIP LOCKED


-- name: pick_preferring_groups
-- The same when the worker prefers groups: their jobs come first, then the rest. (A statement of
-- its own: the preference is a sort key no index holds, and the plan without it must not sort.)
SELECT id FROM jobs
WHERE {fits}
    AND req_memory <= {memory_class}
    AND {not_attempted}
    AND {not_set_aside}
ORDER BY {group_rank}, priority DESC, created_at, id
LIMIT :limit
FOR UPDATE SKIP LOCKED


-- name: not_attempted
-- Not a statement: RETRY_DIFFERENT (:exclude_attempted) in the picks and in count_ahead, as
-- {not_attempted}: the job was never pulled by :worker, exact worker identity (JSONB's ?), never
-- a substring.
NOT (:exclude_attempted AND attempted_by ? :worker::text)


-- name: group_rank
-- Not a statement: a job's place by the worker's preferred groups (:groups), 0 when its group is
-- one of them, else 1; the first key of the pull order, in pick_preferring_groups and in
-- count_ahead as {group_rank}.
CASE WHEN job_group = ANY(:groups::text[]) THEN 0 ELSE 1 END


-- name: change_job
-- {change}, one of common.sql's compare-and-set statements (record_update,
-- end_silent_attempt, retry_failed), with the event it records when :record is 1, committed
-- together in one statement. The event is leased to this request only when no older event of
-- its job is pending (a LATERAL probe of one index entry: it cannot turn into a scan of the
-- outbox).
-- record_update's keep-alive check leaves out :done (not_delivered): the CTE "done" deletes
-- them, but the other parts of this statement still see them.
-- A change that ends an attempt (:ended, the outcome: finished, error or timeout; NULL for one
-- that does not) notes it on the attempt's row in the same statement, once per attempt, and a
-- finished attempt clears its worker's strikes (only when it has some: finishing, the common
-- case, writes nothing there). No extra round trip on a job's last update.
WITH done AS (DELETE FROM status_events WHERE id = ANY(:done::bigint[])),
changed AS ({change}),
ended AS (
    UPDATE job_attempts a SET outcome = :ended::text, ended_at = :now::timestamptz
    FROM changed c
    WHERE :ended::text IS NOT NULL AND a.job_id = c.id AND a.attempt = c.attempt
        AND a.outcome IS NULL
),
forgiven AS (
    UPDATE workers w SET strikes = 0
    FROM changed c
    WHERE :ended::text = 'finished' AND w.name = c.worker AND w.strikes > 0
),
event AS (
    INSERT INTO status_events (
        job_id, upstream_id, status, runtime_details, created_at, due_at, leased_until, attempts
    )
    SELECT c.id, c.upstream_id, c.status, :details::text, :now::timestamptz, :now::timestamptz,
        CASE WHEN older.id IS NULL THEN :lease_until::timestamptz END, 0
    FROM changed c
    LEFT JOIN LATERAL (
        SELECT p.id FROM status_events p
        WHERE p.job_id = c.id AND p.id <> ALL(:done::bigint[])
        LIMIT 1
    ) older ON true
    WHERE :record::int = 1
    RETURNING id, leased_until
)
SELECT changed.*, event.id AS event_id, event.leased_until AS event_leased_until
FROM changed LEFT JOIN event ON true;


-- name: not_delivered
-- Not a statement: filled into common.sql's keepalive_due as {not_delivered}. The events this
-- process delivered (:done) are no longer pending, though the statement that deletes them still
-- sees them: a keep-alive need not wait for them. Events other processes delivered and have not
-- deleted yet do hold a keep-alive back, until their next statement: it waits for the next ping.
AND e.id <> ALL(:done::bigint[])


-- name: note_cool_off_ends
-- The cool-offs that ended by :now and were not reported yet ({mark}: common.sql's
-- mark_cool_off_ends, which marks them), read like workers_with_jobs, in one statement: several
-- processes may run it at once, and each end is returned by exactly one of them (a concurrent
-- marking waits for the row, re-reads it marked, and leaves it). The rest of the statement sees
-- the rows as they were before the marking; only aside_end_noted differs, and it is not read.
WITH noted AS ({mark})
SELECT w.name, w.environment, w.cpu_cores, w.memory, w.gpu_mem, w.gpu_model, w.gpu_archi,
    w.groups, w.older_than, w.first_seen_at, w.last_seen_at, w.strikes, w.aside_at,
    w.aside_until, w.aside_reason, j.id AS active_job
FROM noted
JOIN workers w ON w.name = noted.name
LEFT JOIN jobs j ON j.worker = w.name
    AND j.status IN ('pulled', 'preprocessing', 'running', 'postprocessing')
ORDER BY w.name, j.id;


-- name: drop_events_of_jobs
-- The undelivered events of cancelled jobs: nothing more is said upstream about them.
DELETE FROM status_events WHERE job_id = ANY(:ids::bigint[]);


-- name: lease_events
-- Lease due events to this process's dispatcher, each only when it heads its job's line (no
-- older event of the job is left): delivery is in order per job. SKIP LOCKED: dispatchers in
-- several processes take disjoint events without waiting on each other.
WITH done AS (DELETE FROM status_events WHERE id = ANY(:done::bigint[])),
picked AS (
    SELECT e.id FROM status_events e
    WHERE e.id <> ALL(:done::bigint[]) AND e.due_at <= :now
        AND (e.leased_until IS NULL OR e.leased_until <= :now)
        AND NOT EXISTS (
            SELECT 1 FROM status_events p
            WHERE p.job_id = e.job_id AND p.id <> ALL(:done::bigint[]) AND p.id < e.id
        )
    ORDER BY e.id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE status_events SET leased_until = :until
FROM picked
WHERE status_events.id = picked.id
RETURNING status_events.id, status_events.job_id, status_events.upstream_id,
    status_events.status, status_events.runtime_details, status_events.created_at,
    status_events.attempts;


-- name: flush_deferred
-- Write what this process put off, when no other statement came to take it along: delete the
-- events it delivered (:done), and keep the upstream's latest answer per job (confirm_upstream:
-- :answered_ids with :answered_at, pair by pair; an older answer never replaces a newer one).
-- Invariant: no deadlock between the flushes of several processes, which may confirm the same
-- jobs: each locks its rows in id order before it updates them. Not folded into a statement
-- that changes a job itself: PostgreSQL updates a row only once per statement.
WITH done AS (DELETE FROM status_events WHERE id = ANY(:done::bigint[])),
answered AS (
    SELECT jobs.id, a.at
    FROM unnest(:answered_ids::bigint[], :answered_at::timestamptz[]) AS a(id, at)
    JOIN jobs ON jobs.id = a.id
    WHERE jobs.upstream_ok_at IS NULL OR jobs.upstream_ok_at < a.at
    ORDER BY jobs.id
    FOR NO KEY UPDATE OF jobs
)
UPDATE jobs SET upstream_ok_at = GREATEST(jobs.upstream_ok_at, answered.at)
FROM answered
WHERE jobs.id = answered.id;


-- name: postpone_events
-- The upstream did not take these events: offered again at :until, by any dispatcher.
UPDATE status_events
SET due_at = :until, leased_until = NULL, attempts = attempts + 1, last_error = :error
WHERE id = ANY(:ids::bigint[]);


-- name: minute_of
-- Not a statement: the start of the minute of timestamp {column}, UTC (whatever the session's
-- time zone), for common.sql's throughput.
date_trunc('minute', {column}, 'UTC')
