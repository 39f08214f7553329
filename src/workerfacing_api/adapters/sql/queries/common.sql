-- The queue's statements that PostgreSQL and SQLite run alike, each written once.
--
-- Loaded by name (see __init__.py). Timestamps are timestamptz on PostgreSQL and fixed-width UTC
-- text on SQLite, which compares and sorts like time. A job row comes back with the columns
-- rows.job_from reads. "Active" is the four states between a pull and the end, spelt exactly
-- as in the partial index ix_jobs_active_worker so that the planner can use it.


-- name: fits
-- Not a statement: the predicate of a pull, filled into the claims of both dialects as {fits}.
-- DESIGN §3's matching: a queued job of the worker's environment, or of none once it has waited
-- :any_before, whose every requirement the worker meets. Requirements are stored with
-- "anything" as 0 (numbers) or NULL (names), so that numbers are plain ranges an index serves.
status = 'queued'
    AND (environment = :environment OR (environment = 'any' AND created_at <= :any_before))
    AND req_cpu_cores <= :cpu_cores AND req_memory <= :memory AND req_gpu_mem <= :gpu_mem
    AND (req_gpu_model IS NULL OR req_gpu_model = :gpu_model)
    AND (req_gpu_archi IS NULL OR req_gpu_archi = :gpu_archi)


-- name: insert_job
-- A new job, queued for its first attempt. The caller cancelled any live job with the same
-- upstream id first, in the same transaction: the unique index on live upstream ids refuses a
-- second one, so two racing submissions of one id cannot both stay live.
INSERT INTO jobs (
    upstream_id, status, environment, job_group, priority,
    req_cpu_cores, req_memory, req_gpu_mem, req_gpu_model, req_gpu_archi, spec, paths_upload,
    attempt, num_retries, event_seq, attempted_by, created_at, updated_at
) VALUES (
    :upstream_id, 'queued', :environment, :job_group, :priority,
    :req_cpu_cores, :req_memory, :req_gpu_mem, :req_gpu_model, :req_gpu_archi, :spec,
    :paths_upload, 0, 0, 0, '[]', :now, :now
)
RETURNING id, upstream_id, status, environment, job_group, priority, spec, paths_upload,
    worker, attempt, num_retries, event_seq, runtime_details, created_at, updated_at,
    last_heartbeat_at, forwarded_at, upstream_ok_at;


-- name: cancel_live_jobs_of_upstream_id
-- A submission supersedes every job with its meta.job_id that is not cancelled yet: the
-- user-facing API reuses the ids of deleted jobs without telling, and the old job must never
-- report into the new job's status or folders. The caller drops the events of the jobs returned.
UPDATE jobs SET status = 'cancelled', updated_at = :now
WHERE upstream_id = :upstream_id AND status <> 'cancelled'
RETURNING id;


-- name: cancel_job
-- The user deleted the job (the upstream answered 404): it leaves the queue for good and never
-- changes again. The caller drops its undelivered events in the same transaction, so nothing
-- more is said about it upstream.
UPDATE jobs SET status = 'cancelled', updated_at = :now
WHERE id = :id AND status <> 'cancelled'
RETURNING id;


-- name: get_job
SELECT id, upstream_id, status, environment, job_group, priority, spec, paths_upload,
    worker, attempt, num_retries, event_seq, runtime_details, created_at, updated_at,
    last_heartbeat_at, forwarded_at, upstream_ok_at
FROM jobs
WHERE id = :id;


-- name: active_jobs_of_worker
-- The jobs a worker holds now: it may download only their input files.
SELECT id, upstream_id, status, environment, job_group, priority, spec, paths_upload,
    worker, attempt, num_retries, event_seq, runtime_details, created_at, updated_at,
    last_heartbeat_at, forwarded_at, upstream_ok_at
FROM jobs
WHERE worker = :worker AND status IN ('pulled', 'preprocessing', 'running', 'postprocessing')
ORDER BY id;


-- name: find_expired
-- Active jobs whose worker has said nothing since :before, the longest silence first. Only
-- active jobs time out, and the partial index on them finds these without reading the queue.
SELECT id, upstream_id, status, environment, job_group, priority, spec, paths_upload,
    worker, attempt, num_retries, event_seq, runtime_details, created_at, updated_at,
    last_heartbeat_at, forwarded_at, upstream_ok_at
FROM jobs
WHERE status IN ('pulled', 'preprocessing', 'running', 'postprocessing')
    AND last_heartbeat_at < :before
ORDER BY last_heartbeat_at, id
LIMIT :limit;


-- The two changes below are each a compare-and-set on the snapshot the core decided on:
-- (id, status, attempt), and event_seq as well when the change records an event (:record = 1),
-- which it then counts. No row back means the snapshot was stale and nothing changed: a late
-- worker update cannot touch a job that was re-queued and pulled by another worker, a late sweep
-- cannot undo a worker's update, and two events of one job commit one after the other, so the
-- later one always sees the earlier when it checks the job's line in the outbox. A cancelled job
-- never changes again. Only the columns a change can touch come back: the rest of the job (its
-- document above all) is the snapshot's, and reading it back on every keep-alive is waste;
-- upstream_ok_at comes back too, as confirm_upstream may have moved it since the snapshot. A
-- change that records an event sends a message upstream: forwarded_at becomes :now. The caller
-- records the event (SQLite: its next statement; PostgreSQL: the same statement, see change_job
-- in postgres.sql).

-- name: record_update
-- A worker's accepted update: the state it reports (the same one again is a keep-alive), a
-- fresh heartbeat, and its runtime_details when it sent some. An update that records no event
-- may claim the job's keep-alive ({keepalive}: keepalive_due, true or false): in this same
-- statement, so that of many processes that see a job's pings at once exactly one claims it
-- (a concurrent update waits for the row and decides on what the first one wrote).
UPDATE jobs
SET status = :status, last_heartbeat_at = :now, updated_at = :now,
    runtime_details = COALESCE(:details, runtime_details), event_seq = event_seq + :record,
    keepalive_claimed = {keepalive},
    forwarded_at = CASE WHEN :record = 1 OR {keepalive} THEN :now ELSE forwarded_at END
WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt
    AND status <> 'cancelled' AND (:record = 0 OR event_seq = :expected_event_seq)
RETURNING id, upstream_id, status, worker, attempt, num_retries, event_seq, runtime_details,
    updated_at, last_heartbeat_at, forwarded_at, upstream_ok_at, keepalive_claimed;


-- name: end_silent_attempt
-- The sweep ends the attempt of a job whose worker fell silent: with :requeue = 1 the job goes
-- back to the queue for one retry more, with :requeue = 0 (its retries are used up) it fails.
-- It must still be active and still silent: a keep-alive that won the race keeps the job.
UPDATE jobs
SET status = CASE WHEN :requeue = 1 THEN 'queued' ELSE 'error' END,
    worker = CASE WHEN :requeue = 1 THEN NULL ELSE worker END,
    num_retries = num_retries + :requeue,
    runtime_details = :details, updated_at = :now, event_seq = event_seq + :record,
    keepalive_claimed = false,
    forwarded_at = CASE WHEN :record = 1 THEN :now ELSE forwarded_at END
WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt
    AND status <> 'cancelled' AND (:record = 0 OR event_seq = :expected_event_seq)
    AND status IN ('pulled', 'preprocessing', 'running', 'postprocessing')
    AND last_heartbeat_at < :heartbeat_before
RETURNING id, upstream_id, status, worker, attempt, num_retries, event_seq, runtime_details,
    updated_at, last_heartbeat_at, forwarded_at, upstream_ok_at, keepalive_claimed;


-- name: keepalive_due
-- Not a statement: whether a worker's update claims its job's keep-alive, filled into
-- record_update as {keepalive}. DESIGN §3: a keep-alive goes upstream when the update records no
-- event, nothing went upstream about the job since :keepalive_before (NULL: none is asked for),
-- and none of the job's events waits in the outbox, which it must never overtake. The probe of
-- the outbox (one index entry) runs only when the rest holds: at most once per interval and job
-- while its pings go out. {not_delivered} leaves out the events known delivered but not deleted
-- yet (PostgreSQL's :done; nothing on SQLite, which deletes them at once).
CASE WHEN :record = 0 AND COALESCE(forwarded_at, :keepalive_before) <= :keepalive_before
    THEN NOT EXISTS (
        SELECT 1 FROM status_events e WHERE e.job_id = jobs.id {not_delivered}
    )
    ELSE false
END


-- name: record_upload
-- A file stored for an attempt of a job, noted before the upload is answered: should the job
-- turn out deleted by its user, uploads_since finds it.
INSERT INTO job_uploads (job_id, attempt, file_id, stored_at)
VALUES (:job_id, :attempt, :file_id, :now);


-- name: uploads_since
-- The files a job stored after :since (the earliest time there is when the caller gives none),
-- each once, in the order they were first stored then (ids are storage order; clocks of
-- several processes need not agree). A file another job stored again later is that job's
-- file now: it is left out, unless this job stored it once more after that.
SELECT u.file_id
FROM job_uploads u
WHERE u.job_id = :job_id AND u.stored_at > :since
    AND NOT EXISTS (
        SELECT 1 FROM job_uploads o
        WHERE o.file_id = u.file_id AND o.job_id <> u.job_id
            AND o.id > u.id AND o.stored_at > u.stored_at
    )
GROUP BY u.file_id
ORDER BY min(u.id);


-- name: expedite_events
-- The upstream answers again: every postponed event is due now (order per job is kept by the
-- lease, which only hands out the oldest event of a job).
UPDATE status_events SET due_at = :now WHERE due_at > :now;


-- Operator views (workerfacing-api jobs stats|show), read-only.

-- name: count_jobs_by_status
SELECT status, count(*) AS n FROM jobs GROUP BY status;


-- name: oldest_queued_job
SELECT id, created_at FROM jobs WHERE status = 'queued' ORDER BY created_at, id LIMIT 1;


-- name: outbox_backlog
SELECT count(*) AS n, min(created_at) AS oldest FROM status_events;


-- name: attempts_of_job
SELECT attempt, worker, pulled_at FROM job_attempts WHERE job_id = :id ORDER BY attempt;


-- name: events_of_job
SELECT id, job_id, upstream_id, status, runtime_details, created_at, attempts
FROM status_events
WHERE job_id = :id
ORDER BY id;
