-- The queue's statements and the pieces of statements that PostgreSQL and SQLite say alike, each
-- written once.
--
-- Loaded by name (see __init__.py): a statement's {name} is the piece of that name, from this
-- file or the dialect's own (postgres.sql, sqlite.sql), where what differs lives. Parameters are
-- written :name; casts are CAST(... AS ...), which both dialects read. Timestamps are timestamptz
-- on PostgreSQL and fixed-width UTC text on SQLite, which compares and sorts like time. A job
-- row comes back with the columns rows.job_from reads. "Active" is the four states between a
-- pull and the end, spelt exactly as in the partial index ix_jobs_active_worker so that the
-- planner can use it.


-- name: job_columns
-- Not a statement: what rows.job_from reads of a job.
id, upstream_id, status, environment, job_group, priority, spec, paths_upload,
    worker, node, attempt, num_retries, event_seq, runtime_details, created_at, updated_at,
    last_heartbeat_at, forwarded_at, upstream_ok_at, wait_notice


-- name: fits
-- Not a statement: the predicate of a pull, in the claims of both dialects and in count_ahead.
-- ARCHITECTURE §3's matching: a queued job of the worker's environment, or of none once it has waited
-- :any_before, whose every requirement the worker meets. Requirements are stored with
-- "anything" as 0 (numbers) or NULL (names), so that numbers are plain ranges an index serves.
status = 'queued'
    AND (environment = :environment OR (environment = 'any' AND created_at <= :any_before))
    AND req_cpu_cores <= :cpu_cores AND req_memory <= :memory AND req_gpu_mem <= :gpu_mem
    AND (req_gpu_model IS NULL OR req_gpu_model = :gpu_model)
    AND (req_gpu_archi IS NULL OR req_gpu_archi = :gpu_archi)


-- name: fitting_for_worker
-- Not a statement: what the claims of both dialects may pick for :worker: what fits it, in its
-- memory class ({memory_class}, a literal: see postgres.sql's pick_in_queue_order), not tried by
-- it before when RETRY_DIFFERENT asks so ({not_attempted}), and nothing while its node is set
-- aside.
{fits}
    AND req_memory <= {memory_class}
    AND {not_attempted}
    AND {worker_not_set_aside}


-- name: worker_not_set_aside
-- Not a statement: in the picks of both dialects' claims.
-- Invariant: a node set aside (nodes.aside_until after :now) gets no job (ARCHITECTURE §3: its pulls
-- answer nothing until its cool-off ends). Checked inside the claim itself, not before it: a
-- cool-off another process begins, or an operator ends, counts from the next claim on, and the
-- pull costs no extra round trip. Uncorrelated (it names :node, not the job): the planner
-- evaluates it once per claim, one probe of the nodes' primary key, and a node set aside reads
-- no job at all.
NOT EXISTS (SELECT 1 FROM nodes w WHERE w.node = :node AND w.aside_until > :now)


-- name: held_by_node
-- Not a statement: the active jobs node :node of account :worker holds (the hold cap,
-- MAX_JOBS_PER_NODE): a range of ix_jobs_active_worker, whose condition this spells out.
SELECT count(*) FROM jobs
WHERE worker = :worker AND node = :node
    AND status IN ('pulled', 'preprocessing', 'running', 'postprocessing')


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
RETURNING {job_columns};


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
SELECT {job_columns}
FROM jobs
WHERE id = :id;


-- name: active_jobs_of_worker
-- The jobs a worker holds now: it may download only their input files.
SELECT {job_columns}
FROM jobs
WHERE worker = :worker AND status IN ('pulled', 'preprocessing', 'running', 'postprocessing')
ORDER BY id;


-- name: find_expired
-- Active jobs whose worker has said nothing since :before, the longest silence first. Only
-- active jobs time out, and the partial index on them finds these without reading the queue
-- ({through_active_jobs}: how the dialect is told so, if it must be).
-- With the workers that pulled each since it last started over (attempted_by, in pull order:
-- an operator's retry forgets them, while job_attempts keeps the whole history).
SELECT {job_columns}, attempted_by
FROM jobs {through_active_jobs}
WHERE status IN ('pulled', 'preprocessing', 'running', 'postprocessing')
    AND last_heartbeat_at < :before
ORDER BY last_heartbeat_at, id
LIMIT :limit;


-- name: live_job
-- The job the upstream knows by :upstream_id now: the one not cancelled (at most one, by the
-- unique partial index ix_jobs_live_upstream_id, which finds it).
SELECT {job_columns}
FROM jobs
WHERE upstream_id = :upstream_id AND status <> 'cancelled';


-- name: count_ahead
-- How many queued jobs a worker would take before job :id (why a job waits): those that fit it
-- ({fits}, the claim's own predicate, and {not_attempted}, its RETRY_DIFFERENT) and come first in
-- its pull order, the claim's ORDER BY as a comparison with the job's own key (:preferred,
-- :priority, :created_at, :id): preferred groups first ({group_rank}, 0 or 1), then priority
-- descending, oldest first, lowest id. Read-only; it locks nothing. Counting stops at :cap: a
-- job far back in a long queue is answered after reading about :cap rows, not the whole queue.
SELECT count(*) AS n
FROM (
    SELECT 1
    FROM (
        SELECT {group_rank} AS preferred, priority, created_at, id
        FROM jobs
        WHERE {fits} AND {not_attempted} AND id <> :id
    ) AS fitting
    WHERE preferred < :preferred
        OR (preferred = :preferred AND (priority > :priority
            OR (priority = :priority AND (created_at < :created_at
                OR (created_at = :created_at AND id < :id)))))
    LIMIT :cap
) AS ahead;


-- The changes of a job below (a worker's update, the sweep's end of a silent attempt, an
-- operator's retry) are each a compare-and-set on the snapshot the core decided on: (id, status,
-- attempt), and event_seq as well when the change records an event (:record = 1), which it then
-- counts. No row changed means the snapshot was stale and nothing changed: a late worker update
-- cannot touch a job that was re-queued and pulled by another worker, a late sweep cannot undo a
-- worker's update, and two events of one job commit one after the other, so the later one always
-- sees the earlier when it checks the job's line in the outbox. A cancelled job never changes
-- again. A change that records an event sends a message upstream: forwarded_at becomes :now.
-- Each dialect runs one of them together with what follows it (note_outcome, forgive_strikes,
-- record_event), all or nothing: PostgreSQL in one statement, SQLite in one transaction (see
-- the dialects' record_update).

-- name: changed_columns
-- Not a statement: what a change gives back. Only the columns a change can touch: the rest of the
-- job (its document above all) is the snapshot's, and reading it back on every keep-alive is
-- waste; upstream_ok_at comes back too, as a delivery may have moved it since the snapshot.
id, upstream_id, status, worker, node, attempt, num_retries, event_seq, runtime_details,
    updated_at, last_heartbeat_at, forwarded_at, upstream_ok_at, keepalive_claimed


-- name: set_reported_status
-- Not a statement: a worker's accepted update: the state it reports (the same one again is a
-- keep-alive), a fresh heartbeat, and its runtime_details when it sent some. An update that
-- records no event may claim the job's keep-alive ({keepalive_due}, true or false): in this same
-- statement, so that of many processes that see a job's pings at once exactly one claims it
-- (a concurrent update waits for the row and decides on what the first one wrote). It keeps
-- the upstream's answer to the job's events it forgets (:acknowledged, see forget_acknowledged).
UPDATE jobs
SET status = :status, last_heartbeat_at = :now, updated_at = :now,
    runtime_details = COALESCE(:details, runtime_details), event_seq = event_seq + :record,
    keepalive_claimed = {keepalive_due},
    forwarded_at = CASE WHEN :record = 1 OR {keepalive_due} THEN :now ELSE forwarded_at END,
    upstream_ok_at = {answered_by_acknowledged}
WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt
    AND status <> 'cancelled' AND (:record = 0 OR event_seq = :expected_event_seq)


-- name: answered_by_acknowledged
-- Not a statement: the job's upstream_ok_at once the upstream's answers to its events among
-- :acknowledged are kept: the latest answer stays, whatever order they come in. The events are
-- still there when this is read (forget_acknowledged deletes them after the change).
COALESCE(
    (SELECT max(a.created_at) FROM status_events a
        WHERE a.job_id = jobs.id AND a.id {in_acknowledged}
        HAVING upstream_ok_at IS NULL OR max(a.created_at) > upstream_ok_at),
    upstream_ok_at
)


-- name: forget_acknowledged
-- Not a statement: a worker's update forgets the events of its job that this process delivered
-- and has not acknowledged yet (:acknowledged, core.sync.Acknowledgements), in its own
-- transaction, so that its own event may head the job's line and go inline. {if_changed}: only
-- when the change won (otherwise they stay for the next acknowledgement).
DELETE FROM status_events
WHERE job_id = :id AND id {in_acknowledged} {if_changed}


-- name: keepalive_due
-- Not a statement: whether a worker's update claims its job's keep-alive, in set_reported_status.
-- ARCHITECTURE §3: a keep-alive goes upstream when the update records no event, nothing went upstream
-- about the job since :keepalive_before (NULL: none is asked for), and none of the job's events
-- waits in the outbox, which it must never overtake. The probe of the outbox (one index entry)
-- runs only when the rest holds: at most once per interval and job while its pings go out.
CASE WHEN :record = 0 AND COALESCE(forwarded_at, :keepalive_before) <= :keepalive_before
    THEN NOT EXISTS (
        SELECT 1 FROM status_events e WHERE e.job_id = jobs.id AND NOT (e.id {in_acknowledged})
    )
    ELSE false
END


-- name: end_silent_attempt_of_job
-- Not a statement: the sweep ends the attempt of a job whose worker fell silent: with
-- :requeue = 1 the job goes back to the queue for one retry more, with :requeue = 0 (its retries
-- are used up) it fails. It must still be active and still silent: a keep-alive that won the
-- race keeps the job.
UPDATE jobs
SET status = CASE WHEN :requeue = 1 THEN 'queued' ELSE 'error' END,
    worker = CASE WHEN :requeue = 1 THEN NULL ELSE worker END,
    node = CASE WHEN :requeue = 1 THEN NULL ELSE node END,
    num_retries = num_retries + :requeue,
    runtime_details = :details, updated_at = :now, event_seq = event_seq + :record,
    keepalive_claimed = false, wait_notice = NULL,
    forwarded_at = CASE WHEN :record = 1 THEN :now ELSE forwarded_at END
WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt
    AND status <> 'cancelled' AND (:record = 0 OR event_seq = :expected_event_seq)
    AND status IN ('pulled', 'preprocessing', 'running', 'postprocessing')
    AND last_heartbeat_at < :heartbeat_before


-- name: start_failed_job_over
-- Not a statement: an operator's retry (ARCHITECTURE §3): a job that ended in error starts over,
-- queued with no worker, no retries used and no worker tried (RETRY_DIFFERENT then lets the
-- worker it failed on take it again), and :details for the upstream. Only from error: a job that
-- moved on (cancelled, already retried by someone else) is left alone. Its next pull is a new
-- attempt.
UPDATE jobs
SET status = 'queued', worker = NULL, node = NULL, num_retries = 0, attempted_by = '[]',
    runtime_details = :details, updated_at = :now, event_seq = event_seq + :record,
    keepalive_claimed = false, wait_notice = NULL,
    forwarded_at = CASE WHEN :record = 1 THEN :now ELSE forwarded_at END
WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt
    AND status = 'error' AND (:record = 0 OR event_seq = :expected_event_seq)


-- name: fail_on_operators_word_job
-- Not a statement: an operator fails a queued or active job with :details (ARCHITECTURE §3). No
-- worker holds it any more, so that its worker's next call answers 404 and it stops; its
-- attempt, if one runs, ends as 'stopped' (note_outcome: no evidence against the node).
UPDATE jobs
SET status = 'error', worker = NULL, node = NULL, runtime_details = :details, updated_at = :now,
    event_seq = event_seq + :record, keepalive_claimed = false,
    forwarded_at = CASE WHEN :record = 1 THEN :now ELSE forwarded_at END
WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt
    AND (:record = 0 OR event_seq = :expected_event_seq)
    AND status IN ('queued', 'pulled', 'preprocessing', 'running', 'postprocessing')


-- name: tell_why_waiting_job
-- Not a statement: the user of a queued job is told why it waits (core.notices): :notice is
-- what it was told (null: a worker that can run it was seen since), and the event carries
-- :details. Once per notice: a change to the notice it already has is no change, so of several
-- sweepers deciding at once one tells, and a notice repeated at every sweep is never sent
-- again. Neither its runtime_details nor updated_at (since when it waits) move.
UPDATE jobs
SET wait_notice = :notice, event_seq = event_seq + :record, keepalive_claimed = false,
    forwarded_at = CASE WHEN :record = 1 THEN :now ELSE forwarded_at END
WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt
    AND status = 'queued' AND (:record = 0 OR event_seq = :expected_event_seq)
    AND COALESCE(wait_notice, '') <> COALESCE(CAST(:notice AS TEXT), '')


-- name: fail_waiting_job
-- Not a statement: QUEUED_LIMIT: a job that waited that long, and that no worker seen can run,
-- fails with :details. Only while still queued: a pull that came first keeps it.
UPDATE jobs
SET status = 'error', runtime_details = :details, updated_at = :now,
    event_seq = event_seq + :record, keepalive_claimed = false,
    forwarded_at = CASE WHEN :record = 1 THEN :now ELSE forwarded_at END
WHERE id = :id AND status = :expected_status AND attempt = :expected_attempt
    AND status = 'queued' AND (:record = 0 OR event_seq = :expected_event_seq)


-- name: note_outcome
-- Not a statement: after a change that ended an attempt (:ended, the outcome: finished, error or
-- timeout; NULL for one that does not), how it ended is noted on the attempt's row, once: a
-- later note never rewrites the evidence. {if_changed}: only when the change won.
UPDATE job_attempts SET outcome = CAST(:ended AS TEXT), ended_at = :now
WHERE CAST(:ended AS TEXT) IS NOT NULL AND job_id = :id AND attempt = :expected_attempt
    AND outcome IS NULL {if_changed}


-- name: forgive_strikes
-- Not a statement: a finished attempt clears its node's strikes (:job_node, the snapshot's): its
-- next cool-off is the shortest again. Written only when there is something to forgive
-- (finishing is the common case, and costs no write). {if_changed}: only when the change won.
UPDATE nodes SET strikes = 0
WHERE CAST(:ended AS TEXT) = 'finished' AND node = :job_node AND strikes > 0 {if_changed}


-- name: new_event
-- Not a statement: the status event of a change, from the job as the change left it (alias c),
-- for record_event and the claims. It is leased to the request that made the change (to be sent
-- inline) only when no older event of its job is pending (a probe of one index entry; those the
-- change forgets, :acknowledged, are not); otherwise the dispatcher sends it after them, in
-- order.
INSERT INTO status_events (
    job_id, upstream_id, status, runtime_details, created_at, due_at, leased_until, attempts
)
SELECT c.id, c.upstream_id, c.status, CAST(:details AS TEXT),
    CAST(:now AS {timestamp_type}), CAST(:now AS {timestamp_type}),
    CASE WHEN EXISTS (
            SELECT 1 FROM status_events p WHERE p.job_id = c.id AND NOT (p.id {in_acknowledged})
        )
        THEN NULL ELSE CAST(:lease_until AS {timestamp_type}) END,
    0


-- name: record_event
-- Not a statement: the event of a change that records one (:record = 1), from the job as the
-- change left it ({changed_job}).
{new_event}
FROM {changed_job} c
WHERE :record = 1




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


-- The fleet (WorkerRegistry): the worker nodes seen pulling, how their attempts ended, and which
-- are set aside. A node's row is written by its pulls (record_seen, and the claims' claim_seq)
-- and by the judgement of its failures (set_aside, forgive_strikes), an operator (end_cool_off)
-- and the sweep (note_cool_off_ends); the claims read it (worker_not_set_aside).

-- name: record_seen
-- A node pulled: its row says what it offered at that pull, and when it was seen first and
-- last. Pulls of one node from several processes may commit out of order: the latest time seen
-- stays.
INSERT INTO nodes (
    node, account, address, instance, environment, cpu_cores, memory, gpu_mem, gpu_model,
    gpu_archi, groups, older_than, first_seen_at, last_seen_at
) VALUES (
    :node, :name, :address, :instance, :environment, :cpu_cores, :memory, :gpu_mem, :gpu_model,
    :gpu_archi, :groups, :older_than, :now, :now
)
ON CONFLICT (node) DO UPDATE
SET environment = excluded.environment, groups = excluded.groups,
    older_than = excluded.older_than,
    last_seen_at = CASE WHEN excluded.last_seen_at > nodes.last_seen_at
        THEN excluded.last_seen_at ELSE nodes.last_seen_at END;


-- name: workers_with_jobs
-- Not a statement: nodes, each with the jobs it holds now (one row per job, ids ascending; one
-- row with active_job NULL for a node that holds none), for the statements below, which say
-- which nodes. The jobs come from the partial index on active jobs, probed once per node.
SELECT w.node, w.account, w.address, w.instance, w.environment, w.cpu_cores, w.memory,
    w.gpu_mem, w.gpu_model, w.gpu_archi, w.groups, w.older_than, w.first_seen_at,
    w.last_seen_at, w.strikes, w.aside_at, w.aside_until, w.aside_reason, j.id AS active_job
FROM nodes w
LEFT JOIN jobs j ON j.worker = w.account AND j.node = w.node
    AND j.status IN ('pulled', 'preprocessing', 'running', 'postprocessing')


-- name: workers_seen_since
-- The nodes seen at :seen_since or later, by account, then id.
{workers_with_jobs}
WHERE w.last_seen_at >= :seen_since
ORDER BY w.account, w.node, j.id;


-- name: worker_named
-- The node of id :name.
{workers_with_jobs}
WHERE w.node = :name
ORDER BY w.account, w.node, j.id;


-- name: outcomes_of
-- The node's attempts that ended after :since by its own doing (an operator's stop says nothing
-- of it), the latest first (ties: the higher job id, then
-- attempt): a backward range of ix_job_attempts_node_ended_at, in the order wanted.
SELECT job_id, attempt, worker, node, outcome, pulled_at, ended_at
FROM job_attempts
WHERE node = :node AND ended_at > :since AND outcome <> 'stopped'
ORDER BY ended_at DESC, job_id DESC, attempt DESC
LIMIT :limit;


-- name: baseline
-- How the other nodes (not :excluding, not set aside at :now) fared with the attempts that ended
-- after :since, one vote each: healthy when it finished more than it failed (errors and
-- time-outs; an operator's stop is neither), failing otherwise. A range of ix_job_attempts_ended_at, grouped by node.
SELECT count(CASE WHEN finished > failed THEN 1 END) AS healthy,
    count(CASE WHEN finished <= failed THEN 1 END) AS failing
FROM (
    SELECT a.node, count(CASE WHEN a.outcome = 'finished' THEN 1 END) AS finished,
        count(CASE WHEN a.outcome IN ('error', 'timeout') THEN 1 END) AS failed
    FROM job_attempts a
    WHERE a.ended_at > :since AND a.node <> :excluding
        AND NOT EXISTS (SELECT 1 FROM nodes w WHERE w.node = a.node AND w.aside_until > :now)
    GROUP BY a.node
) AS per_node;


-- name: set_aside
-- Begin a cool-off of node :name until :until. A compare-and-set on its standing: it still has
-- :strikes strikes and is not set aside at :now. Of two processes that judge the node at once,
-- one wins; the other changes nothing, so a cool-off is never begun twice or lengthened by a
-- stale judgement. Its end is to be reported again (aside_end_noted).
UPDATE nodes
SET strikes = strikes + 1, aside_at = :now, aside_until = :until, aside_reason = :reason,
    aside_end_noted = false
WHERE node = :name AND strikes = :strikes AND (aside_until IS NULL OR aside_until <= :now)
RETURNING node;


-- name: end_cool_off
-- An operator ends the cool-off of node :name at :now; only a node set aside now. Its end is
-- reported by the release itself, never again by the sweep (aside_end_noted).
UPDATE nodes SET aside_until = :now, aside_end_noted = true
WHERE node = :name AND aside_until > :now
RETURNING node;


-- name: worker_known
-- Whether a node of that id was ever seen (end_cool_off found none set aside).
SELECT node FROM nodes WHERE node = :name;


-- name: cool_off_ends_to_note
-- Not a statement: the cool-offs that ended by :now and were not reported yet. A range of
-- ix_nodes_cool_off_ends (whose predicate this spells out).
aside_until <= :now AND aside_until IS NOT NULL AND NOT aside_end_noted


-- The outbox (Outbox): status events waiting to go upstream. Delivery is at least once and in
-- order per job: only the oldest undelivered event of a job is ever leased.

-- name: deliverable_events
-- Not a statement: due events that head their job's line (no older event of the job is left) and
-- that nobody holds, the oldest first: what lease_events takes. "Heads its line" is a probe of
-- one entry of ix_status_events_job_id_id per event read, however the plan was made: written as
-- NOT EXISTS, a plan made while the outbox was nearly empty (and kept while a backlog grew)
-- read all of the index for every event.
SELECT e.id FROM status_events e
WHERE e.due_at <= :now AND (e.leased_until IS NULL OR e.leased_until <= :now)
    AND e.id = (SELECT min(p.id) FROM status_events p WHERE p.job_id = e.job_id)
ORDER BY e.id
LIMIT :limit


-- name: leased_events
-- Not a statement: what lease_events returns.
RETURNING id, job_id, upstream_id, status, runtime_details, created_at, attempts


-- name: expedite_events
-- The upstream answers again: every postponed event is due now (order per job is kept by the
-- lease, which only hands out the oldest event of a job).
UPDATE status_events SET due_at = :now WHERE due_at > :now;


-- name: confirm_upstream
-- The upstream answered a message about job :id sent at :at (not with a 404): kept when it is
-- the latest answer yet, whatever order the answers come in.
UPDATE jobs SET upstream_ok_at = :at
WHERE id = :id AND (upstream_ok_at IS NULL OR upstream_ok_at < :at);


-- Operator views (stats: /metrics, the dashboard, workerfacing-api jobs stats), read-only.

-- name: count_jobs_by_status
-- An index-only pass over ix_jobs_status (small: a few states, deduplicated), never a sort of
-- the table: the dashboard asks every few seconds.
SELECT status, count(*) AS n FROM jobs GROUP BY status;


-- name: oldest_queued_job
-- The first entry of ix_jobs_queued_created_at.
SELECT id, created_at FROM jobs WHERE status = 'queued' ORDER BY created_at, id LIMIT 1;


-- name: outbox_backlog
SELECT count(*) AS n, min(created_at) AS oldest FROM status_events;


-- name: attempts_of_job
-- A job's attempts, first first, with how each ended (NULL: it has not, or it ended before the
-- fleet was watched): its primary key's range.
SELECT attempt, worker, node, pulled_at, ended_at, outcome
FROM job_attempts
WHERE job_id = :id
ORDER BY attempt;


-- name: events_of_job
SELECT id, job_id, upstream_id, status, runtime_details, created_at, attempts
FROM status_events
WHERE job_id = :id
ORDER BY id;


-- The operators' dashboard (DashboardReads), read-only and asked every few seconds: each read is
-- bounded and served by an index, whatever the size of the queue (benchmarks/dashboard.py).

-- name: throughput
-- Attempts pulled and attempts finished per minute from :since to :now (the last hour), each a
-- range of an index on its time (ix_job_attempts_pulled_at, ix_job_attempts_ended_at), counted
-- per minute before the two are put side by side. {pulled_minute} and {ended_minute} are the
-- dialect's start of the minute, UTC.
SELECT minute, sum(pulled) AS pulled, sum(finished) AS finished
FROM (
    SELECT {pulled_minute} AS minute, count(*) AS pulled, 0 AS finished
    FROM job_attempts
    WHERE pulled_at >= :since AND pulled_at <= :now
    GROUP BY {pulled_minute}
    UNION ALL
    SELECT {ended_minute} AS minute, 0 AS pulled, count(*) AS finished
    FROM job_attempts
    WHERE ended_at >= :since AND ended_at <= :now AND outcome = 'finished'
    GROUP BY {ended_minute}
) AS per_minute
GROUP BY minute
ORDER BY minute;


-- name: waiting_classes
-- Queued jobs by environment and hardware requirement, the most jobs first, at most :limit
-- classes. Invariant: the cost is one pass over the covering partial index
-- ix_jobs_queued_class (an index-only scan, already in group order: no heap read, no sort
-- of the jobs), about 10 ms per 100 000 queued jobs on PostgreSQL; only the classes are sorted.
-- Names sort with NULL as '' so that both dialects give ties the same order.
SELECT environment, req_cpu_cores, req_memory, req_gpu_mem, req_gpu_model, req_gpu_archi,
    count(*) AS jobs, min(created_at) AS oldest
FROM jobs
WHERE status = 'queued'
GROUP BY environment, req_cpu_cores, req_memory, req_gpu_mem, req_gpu_model, req_gpu_archi
ORDER BY count(*) DESC, min(created_at), environment, req_cpu_cores, req_memory, req_gpu_mem,
    COALESCE(req_gpu_model, ''), COALESCE(req_gpu_archi, '')
LIMIT :limit;


-- name: waiting_in_class
-- The queued jobs of one hardware class, as waiting_classes groups them (environment and each
-- requirement equal; {gpu_model_any} and {gpu_archi_any} are literals, 1 when the class asks
-- for no model or architecture, so that each test is a plain equality or IS NULL), that wait
-- since before :queued_before and, unless {any_notice} is 1, whose users were not told
-- :notice; from id :after on, lowest first, at most :limit. Served by ix_jobs_queued_class.
SELECT {job_columns}
FROM jobs
WHERE status = 'queued' AND environment = :environment AND req_cpu_cores = :cpu_cores
    AND req_memory = :memory AND req_gpu_mem = :gpu_mem
    AND ({gpu_model_any} = 1 AND req_gpu_model IS NULL
        OR {gpu_model_any} = 0 AND req_gpu_model = :gpu_model)
    AND ({gpu_archi_any} = 1 AND req_gpu_archi IS NULL
        OR {gpu_archi_any} = 0 AND req_gpu_archi = :gpu_archi)
    AND updated_at < :queued_before
    AND ({any_notice} = 1 OR COALESCE(wait_notice, '') <> :notice)
    AND id > :after
ORDER BY id
LIMIT :limit;


-- name: told_why_waiting
-- The queued jobs whose users were told that no worker can run them, from id :after on, at
-- most :limit: a range of the small partial index ix_jobs_wait_noticed.
SELECT {job_columns}
FROM jobs
WHERE status = 'queued' AND wait_notice IS NOT NULL AND id > :after
ORDER BY id
LIMIT :limit;


-- name: list_jobs
-- The jobs view (DashboardReads.list_jobs) over every state (or several: {some_states}): the
-- jobs every given filter selects, the highest id first, :limit at most. Invariant: a page walks
-- the primary key backwards and stops at :limit; it never sorts the jobs.
SELECT {job_columns}
FROM jobs
WHERE ({some_states} = 0 OR status {in_states}) AND {jobs_view_filters}
ORDER BY id DESC
LIMIT :limit;


-- name: list_jobs_of_state
-- The jobs view over one state: likewise, a range of ix_jobs_status_id read backwards.
SELECT {job_columns}
FROM jobs
WHERE status = :state AND {jobs_view_filters}
ORDER BY id DESC
LIMIT :limit;


-- name: jobs_view_filters
-- Not a statement: the jobs view's filters but the state, each on when its literal is 1 (so
-- that each set of filters is planned as what it is), and keyset pages: from below :before_id
-- on when {paged}, so that a job submitted meanwhile never shifts a page.
({by_environment} = 0 OR environment = :environment)
    AND ({by_worker} = 0 OR worker = :worker)
    AND ({by_node} = 0 OR node = :node)
    AND ({by_class} = 0 OR (req_cpu_cores = :cpu_cores AND req_memory = :memory
        AND req_gpu_mem = :gpu_mem
        AND ({gpu_model_any} = 1 AND req_gpu_model IS NULL
            OR {gpu_model_any} = 0 AND req_gpu_model = :gpu_model)
        AND ({gpu_archi_any} = 1 AND req_gpu_archi IS NULL
            OR {gpu_archi_any} = 0 AND req_gpu_archi = :gpu_archi)))
    AND ({older} = 0 OR created_at < :created_before)
    AND ({younger} = 0 OR created_at >= :created_after)
    AND ({by_upstream_id} = 0 OR upstream_id = :upstream_id)
    AND ({by_queue_id} = 0 OR id = :queue_id)
    AND ({paged} = 0 OR id < :before_id)


-- The operators' audit log (AuditLog): written once per action, never changed.

-- name: record_action
INSERT INTO audit_log (at, actor, action, target, jobs, detail)
VALUES (:at, :actor, :action, :target, :jobs, :detail)
RETURNING id, at, actor, action, target, jobs, detail;


-- name: audit_actions
-- The latest actions first, below :before_id when {paged}: a range of the primary key.
SELECT id, at, actor, action, target, jobs, detail
FROM audit_log
WHERE {paged} = 0 OR id < :before_id
ORDER BY id DESC
LIMIT :limit;


-- name: recent_failures
-- The newest failures, at most :limit: jobs whose status is error (at their last update; found
-- by the partial index ix_jobs_error and sorted) and attempts the sweep took back
-- (outcome timeout; ix_job_attempts_timeout_ended_at, read backwards), each part bounded before
-- they are merged. The time-out that failed its job for good (the job is in error at that
-- attempt) is that job's failure, not listed twice. A time-out's runtime_details are the job's
-- only while no later attempt wrote its own.
SELECT job_id, upstream_id, kind, attempt, worker, at, runtime_details
FROM (
    SELECT * FROM (
        SELECT id AS job_id, upstream_id, 'failed' AS kind, attempt, worker, updated_at AS at,
            runtime_details
        FROM jobs
        WHERE status = 'error'
        ORDER BY updated_at DESC, id DESC
        LIMIT :limit
    ) AS failed
    UNION ALL
    SELECT * FROM (
        SELECT a.job_id, j.upstream_id, 'requeued' AS kind, a.attempt, a.worker,
            a.ended_at AS at,
            CASE WHEN j.attempt = a.attempt THEN j.runtime_details END AS runtime_details
        FROM job_attempts a
        JOIN jobs j ON j.id = a.job_id
        WHERE a.outcome = 'timeout' AND NOT (j.status = 'error' AND j.attempt = a.attempt)
        ORDER BY a.ended_at DESC, a.job_id DESC, a.attempt DESC
        LIMIT :limit
    ) AS requeued
) AS failures
ORDER BY at DESC, job_id DESC, attempt DESC
LIMIT :limit;


-- The operators' dashboard sessions (sessions.py: Litestar's Store, which its session
-- middleware reads when a request brings the cookie, writes when an answer has a session, and
-- deletes at sign-out). A session whose expires_at has passed is gone: no statement reads it,
-- and the next keep_session removes it.

-- name: session_alive
-- Not a statement: a session that has not expired (null: it never does).
(expires_at IS NULL OR expires_at > :now)


-- name: session_value
SELECT value FROM ui_sessions WHERE key = :key AND {session_alive};


-- name: session_expiry
SELECT expires_at FROM ui_sessions WHERE key = :key AND {session_alive};


-- name: renew_session
-- A session read with renewal lives until :expires_at; one that never expires stays so, and an
-- expired one stays gone.
UPDATE ui_sessions SET expires_at = :expires_at WHERE key = :key AND expires_at > :now;


-- name: write_session
-- Not a statement: keep_session's write, in both dialects. The middleware writes the session
-- again with every answer (the dashboard asks every 5 s), mostly unchanged: the row is then
-- rewritten only when its data changed or its expiry moves by more than a minute
-- (:renew_before is the new expiry less a minute), so a refresh writes no row version.
INSERT INTO ui_sessions (key, value, expires_at) VALUES (:key, :value, :expires_at)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
WHERE ui_sessions.value <> excluded.value
    OR ui_sessions.expires_at IS NULL OR excluded.expires_at IS NULL
    OR ui_sessions.expires_at < :renew_before OR ui_sessions.expires_at > excluded.expires_at


-- name: end_session
-- Signing out. Invariant: once this commits, no process reads the session (none keeps a copy).
DELETE FROM ui_sessions WHERE key = :key;


-- name: end_every_session
DELETE FROM ui_sessions;


-- name: schema_revision
-- The Alembic revision the database is at (readiness: the schema must be the code's).
SELECT version_num FROM alembic_version;
