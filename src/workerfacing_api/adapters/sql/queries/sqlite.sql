-- What only SQLite says. SQLite has one writer at a time: a change runs as a few short
-- statements in one BEGIN IMMEDIATE transaction, which takes the write lock up front, so a
-- claim's pick and its update see the same queue and a change commits with its event. Id lists
-- are expanding parameters (IN :ids, one placeholder per id).


-- name: pick_from_head
-- The first fitting jobs among the first :window queued ones in hand-out order (walking
-- ix_jobs_queued_order): when most jobs fit they are there, and nothing needs sorting. Fewer than
-- :limit found while more than :window jobs are queued means few fit: then pick_fitting finds
-- them. Only for a worker that prefers no group (a preference reorders the queue: no head).
-- {not_attempted} is RETRY_DIFFERENT; {not_set_aside} (common.sql's worker_not_set_aside) gives
-- a worker set aside nothing, decided once per claim.
SELECT id
FROM (
    SELECT * FROM jobs INDEXED BY ix_jobs_queued_order
    WHERE status = 'queued'
    ORDER BY priority DESC, created_at, id
    LIMIT :window
) AS jobs
WHERE {fits}
    AND {not_attempted}
    AND {not_set_aside}
ORDER BY priority DESC, created_at, id
LIMIT :limit;


-- name: pick_fitting
-- The first fitting jobs in hand-out order, preferred groups (:groups, maybe none) first, found
-- through ix_jobs_queued_fit: a range of the jobs of the worker's environment that need no more
-- memory than it has, then sorted. The same {not_attempted} and {not_set_aside}.
SELECT id FROM jobs INDEXED BY ix_jobs_queued_fit
WHERE {fits}
    AND {not_attempted}
    AND {not_set_aside}
ORDER BY {group_rank}, priority DESC, created_at, id
LIMIT :limit;


-- name: not_attempted
-- Not a statement: RETRY_DIFFERENT (:exclude_attempted) in the picks and in count_ahead, as
-- {not_attempted}: the job was never pulled by :worker, exact worker identity (an element of the
-- JSON array), never a substring.
NOT (:exclude_attempted AND EXISTS (
    SELECT 1 FROM json_each(jobs.attempted_by) WHERE json_each.value = :worker
))


-- name: group_rank
-- Not a statement: a job's place by the worker's preferred groups (:groups, maybe none), 0 when
-- its group is one of them, else 1; the first key of the pull order, in pick_fitting and in
-- count_ahead as {group_rank}.
CASE WHEN job_group IN :groups THEN 0 ELSE 1 END


-- name: take_jobs
-- Hand the picked jobs to :worker for their next attempt; counted as an event when events are
-- recorded (:record = 1), which then goes upstream (forwarded_at). The pick ran in this same
-- write transaction, so they are still queued.
UPDATE jobs
SET status = 'pulled', worker = :worker, attempt = attempt + 1,
    attempted_by = json_insert(attempted_by, '$[#]', :worker),
    event_seq = event_seq + :record, last_heartbeat_at = :now, updated_at = :now,
    forwarded_at = CASE WHEN :record = 1 THEN :now ELSE forwarded_at END
WHERE id IN :ids AND status = 'queued'
RETURNING id, upstream_id, status, environment, job_group, priority, spec, paths_upload,
    worker, attempt, num_retries, event_seq, runtime_details, created_at, updated_at,
    last_heartbeat_at, forwarded_at, upstream_ok_at;


-- name: record_attempt
INSERT INTO job_attempts (job_id, attempt, worker, pulled_at)
VALUES (:job_id, :attempt, :worker, :now);


-- name: add_event
-- The event of a change, in the change's transaction. It is leased to the request that made the
-- change (to be sent inline) only when it is the one event of its job still undelivered;
-- otherwise the dispatcher sends it after its predecessors, in order.
INSERT INTO status_events (
    job_id, upstream_id, status, runtime_details, created_at, due_at, leased_until, attempts
) VALUES (
    :job_id, :upstream_id, :status, :details, :now, :now,
    CASE WHEN EXISTS (SELECT 1 FROM status_events WHERE job_id = :job_id)
        THEN NULL ELSE :lease_until END,
    0
)
RETURNING id, leased_until;


-- name: drop_events_of_jobs
-- The undelivered events of cancelled jobs: nothing more is said upstream about them.
DELETE FROM status_events WHERE job_id IN :ids;


-- name: deliverable_events
-- Due events that head their job's line (no older event of the job is left) and that nobody
-- holds: delivery is in order per job. lease_events then takes them in the same transaction.
SELECT e.id FROM status_events e
WHERE e.due_at <= :now AND (e.leased_until IS NULL OR e.leased_until <= :now)
    AND NOT EXISTS (SELECT 1 FROM status_events p WHERE p.job_id = e.job_id AND p.id < e.id)
ORDER BY e.id
LIMIT :limit;


-- name: lease_events
UPDATE status_events SET leased_until = :until
WHERE id IN :ids
RETURNING id, job_id, upstream_id, status, runtime_details, created_at, attempts;


-- name: complete_events
DELETE FROM status_events WHERE id IN :ids;


-- name: postpone_events
-- The upstream did not take these events: offered again at :until.
UPDATE status_events
SET due_at = :until, leased_until = NULL, attempts = attempts + 1, last_error = :error
WHERE id IN :ids;


-- name: confirm_upstream
-- The upstream answered a message about job :id sent at :at (not with a 404): kept when it is
-- the latest answer yet, whatever order the answers come in.
UPDATE jobs SET upstream_ok_at = :at
WHERE id = :id AND (upstream_ok_at IS NULL OR upstream_ok_at < :at);


-- name: record_outcome
-- How attempt :attempt of job :job_id ended, noted in the transaction of the change that ended
-- it (PostgreSQL does it in change_job's own statement), once: a later note never rewrites the
-- evidence.
UPDATE job_attempts SET outcome = :outcome, ended_at = :now
WHERE job_id = :job_id AND attempt = :attempt AND outcome IS NULL;


-- name: clear_strikes
-- The worker finished a job: its next cool-off is the shortest again. Written only when there
-- is something to forgive (finishing is the common case, and costs no write).
UPDATE workers SET strikes = 0 WHERE name = :name AND strikes > 0;


-- name: minute_of
-- Not a statement: the minute of timestamp {column} (fixed-width UTC text) as
-- 'YYYY-MM-DD HH:MM', for common.sql's throughput; rows.minute_from reads it back.
substr({column}, 1, 16)
