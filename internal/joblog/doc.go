// Package joblog carries a job attempt's output from the step's pipes to the
// coordinator's log, on the executor: a Redactor removes the job's secrets,
// and a Streamer ships what is left in ordered, capped, retried chunks.
//
// Redaction happens here, before a byte leaves the executor host. Each secret
// is redacted as its exact value and as the encodings a step is likely to
// print (see SecretForms), also when it is split across writes or sits inside
// a longer base64 text; overlapping matches become one Mask.
//
// Memory is bounded whatever the step prints: the Redactor holds back at most
// the longest secret form, the Streamer at most its buffer, one chunk in
// flight and the tail it keeps under the attempt's limit. A full buffer
// blocks the step's writes (backpressure) rather than growing.
//
// Typical wiring for one attempt, every byte going through the one Redactor so
// that the order of the step's streams and the executor's own lines survives:
//
//	s := joblog.NewStreamer(ctx, sink, joblog.StreamerOptions{Limit: claim.LogLimit})
//	r := joblog.NewRedactor(s, secretValues)
//	step.Stdout, step.Stderr = r, r
//	// ... run the steps, writing step headers to r as well ...
//	r.Close()                 // release the bytes held back for matching
//	err := s.Close(reportCtx) // flush, marker and tail, wait for acknowledgements
//
// Job output is data, never log lines: nothing here writes it to a logger.
package joblog
