package transfer

// The commit of a migration: two-phase commit with a prepared (in-doubt)
// transaction, one decision point, at the source.
//
//	source                                   target
//	freeze (ptrace), stream image  ───────▶  restore as it arrives
//	                                         hold: stopped, locks on;
//	                                         record "prepared"
//	                               ◀───────  READY
//	record "committing"; hold (SIGSTOP)
//	COMMIT  ── the decision point ───────▶  if still prepared and before
//	                                         its deadline: record
//	                                         "running", resume
//	                               ◀───────  RUNNING  (else ABORTED)
//	kill own copy; FORGET          ───────▶  remove record
//
// Two rules make it safe: the target resumes only on COMMIT, and the
// source kills its copy only on RUNNING (or a resolve that learnt the
// target's record says running). Before COMMIT is sent, any failure
// resumes the source, and the target, on ABORT, on a cut stream or at its
// deadline, kills its frozen copy (safe: without RUNNING the source never
// kills). After COMMIT is sent and before RUNNING arrives, the source
// cannot know: it keeps its copy frozen (in doubt), tries to reach the
// target again until its own deadline, then exits with ExitInDoubt and the
// `relocate resolve ID` line. The target's record decides: "running" means
// the source must die, no record (or "prepared" turned to aborted) means
// the source must resume. A target record is removed only after FORGET,
// which the source sends only after its copy is dead, so "no record" can
// never hide a running target copy that the source still doubts.
//
// Every single fault, and where it leaves the copies (R running, F frozen
// in doubt, - none); "resolve" is the one printed command:
//
//	fault                                   source      target   outcome
//	lost/cut before READY (stream, restore)  resumes R   aborts - one running (source)
//	source dies before its hold              ptrace ends: R  EOF: aborts  one running (source)
//	source dies after hold, before COMMIT    F (record)  EOF: aborts  resolve: target has no record -> source resumes
//	COMMIT lost / link cut after COMMIT      F, in doubt deadline: aborts  resolve -> no record -> source resumes
//	target dies while prepared               resumes R   F (record)   one running; resolve on dst aborts the frozen copy
//	target dies after COMMIT, before resume  F, in doubt F (prepared) resolve: source tells target commit -> target resumes, source dies
//	RUNNING lost / link cut after resume     F, in doubt R            resolve -> "running" -> source copy killed
//	source dies after COMMIT                 F (record)  R or aborted resolve on src settles either way
//	source dies after RUNNING, before kill   F (record)  R            resolve -> "running" -> source killed
//	FORGET lost                              - (killed)  R, record    harmless: a stale "running" record
//	COMMIT after the target's deadline       (gets ABORTED) resumes   target aborted first: one running (source)
//
// Never two running: the target runs only after COMMIT, which is sent only
// with the source held; the source resumes after COMMIT only when the
// target said it aborted or has no record, and a target that aborted never
// resumes. Never none: the source kills only when the target said running,
// and a running target copy is never killed by the protocol. TestCommit*
// checks these claims against every interleaving of one fault.

// srcState is where the source is in the commit.
type srcState int

const (
	srcStreaming  srcState = iota // frozen by ptrace, sending the image, waiting for READY
	srcCommitting                 // held, COMMIT sent (or about to be): waiting for RUNNING
	srcKilled                     // the target runs; this copy is gone
	srcResumed                    // rolled back: this copy runs
	srcInDoubt                    // COMMIT sent, no answer: frozen until resolved
)

// srcEvent is what the source learns.
type srcEvent int

const (
	evReady   srcEvent = iota // READY from the target
	evRunning                 // RUNNING, or a resolve found the target's record running
	evAborted                 // ABORTED, or a resolve found the target has no copy
	evFail                    // an error, a cut link, a deadline, ^C
)

// sourceStep is the source's rule: the state after e, and what to do.
func sourceStep(s srcState, e srcEvent) srcState {
	switch s {
	case srcStreaming:
		if e == evReady {
			return srcCommitting // record, hold, send COMMIT
		}
		// No decision yet: roll back (RUNNING cannot come before COMMIT).
		return srcResumed
	case srcCommitting, srcInDoubt:
		switch e {
		case evRunning:
			return srcKilled
		case evAborted:
			return srcResumed
		}
		return srcInDoubt // keep the copy frozen
	}
	return s // settled: nothing changes it
}

// tgtState is where the target is in the commit.
type tgtState int

const (
	tgtRestoring tgtState = iota // reading the image
	tgtPrepared                  // restored, frozen, READY sent
	tgtRunning                   // resumed
	tgtAborted                   // its copy killed (or never made)
)

// tgtEvent is what happens to the target.
type tgtEvent int

const (
	evImage    tgtEvent = iota // the image is complete and restored
	evCommit                   // COMMIT from the source (or a resolve from the source)
	evAbort                    // ABORT from the source
	evCut                      // the stream ended or broke
	evDeadline                 // no COMMIT in time
)

// targetStep is the target's rule.
func targetStep(s tgtState, e tgtEvent) tgtState {
	switch s {
	case tgtRestoring:
		if e == evImage {
			return tgtPrepared // hold, record, send READY
		}
		return tgtAborted
	case tgtPrepared:
		if e == evCommit {
			return tgtRunning // record running, resume, send RUNNING
		}
		return tgtAborted // abort, remove the record
	}
	return s
}

// targetSettle is the rule for a target's recorded copy asked about by a
// resolve (from the source, or run on the target): a copy that runs keeps
// running; a prepared one resumes only on the source's commit and before
// its deadline; one whose relocate still waits within its deadline is left
// to it; anything else is aborted (safe: the source kills its own copy only
// after hearing "running").
func targetSettle(state, decision string, late, holderAlive bool) tgtState {
	switch {
	case state == stateRunning:
		return tgtRunning
	case decision == "commit" && !late:
		return tgtRunning
	case decision == "" && !late && holderAlive:
		return tgtPrepared
	}
	return tgtAborted
}

// sourceSettle is the rule for a source's copy in doubt, given the
// target's answer (msgRunning, msgAborted; "" when it could not be asked)
// and the user's decision ("" when none was given): srcKilled,
// srcResumed, or srcInDoubt (nothing done).
func sourceSettle(answer, decision string) srcState {
	switch {
	case answer == msgRunning:
		return srcKilled
	case answer == msgAborted:
		return srcResumed
	case answer == "" && decision == "commit":
		return srcKilled
	case answer == "" && decision == "abort":
		return srcResumed
	}
	return srcInDoubt
}
