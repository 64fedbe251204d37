-- Runs last: the server log of the whole suite (debug1) holds no API key.  The
-- keys the suite used are spelled in pieces, so that this query's own text
-- cannot match.
SELECT pg_current_logfile() IS NOT NULL AS log_is_a_file;
SELECT k AS key_in_log
  FROM unnest(ARRAY['sk_test_' || 'fake', 'sk_test_' || 'wrong']) k
 WHERE strpos(pg_read_file(pg_current_logfile()), k) > 0;
-- the log is read, not empty: it holds the suite's own requests
SELECT strpos(pg_read_file(pg_current_logfile()), 'Stripe request') > 0 AS log_has_requests;
