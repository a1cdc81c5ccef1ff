package transfer

import (
	"fmt"
	"testing"
)

// The commit protocol as a pure model: both sides follow sourceStep,
// targetStep, targetSettle and sourceSettle (the rules the real code
// calls), messages travel through a link that a fault can break, and the
// copies' states are checked after every transition. Every single fault
// is tried at every step: a message lost, the link cut (both ways, or one
// way) for good or until the source's retries, each side crashing, the
// target's deadline passing before the commit arrives. Then whoever is
// left settles: the source's own retries, then `relocate resolve` on each
// host, as the printed line says.

type copyState int

const (
	copyNone    copyState = iota
	copyTraced            // frozen by ptrace: runs if its relocate dies
	copyHeld              // frozen by a group stop: stays so
	copyRunning           // runs
	copyDead
)

type step int

const (
	stStream  step = iota // image streaming, target restoring
	stReady               // READY on the wire
	stHold                // source recording and holding
	stCommit              // COMMIT on the wire
	stResume              // target resuming
	stRunning             // RUNNING on the wire
	stKill                // source killing its copy
	stForget              // FORGET on the wire
	numSteps
)

var stepNames = [...]string{"stream", "ready", "hold", "commit", "resume", "running", "kill", "forget"}

type faultKind int

const (
	fNone           faultKind = iota
	fLose                     // the message of this step is lost
	fCutBoth                  // the link breaks both ways from this step, heals for resolve
	fCutBothForever           // and never heals (resolve needs the user's word)
	fCutToTarget              // only source -> target breaks
	fCutToSource              // only target -> source breaks
	fCrashSource              // source relocate SIGKILLed at this step
	fCrashTarget              // target relocate SIGKILLed at this step
	fDeadline                 // the target's deadline passes at this step
	numFaults
)

var faultNames = [...]string{"none", "lose", "cut", "cut-forever", "cut->target", "cut->source", "crash-source", "crash-target", "deadline"}

type world struct {
	errs        []string
	name        string
	src         srcState
	tgt         tgtState
	srcCopy     copyState
	tgtCopy     copyState
	srcAlive    bool
	tgtAlive    bool
	srcRecord   bool   // source record (committing)
	tgtRecord   string // "", statePrepared, stateRunning
	late        bool   // the target's deadline has passed
	toTarget    bool   // link up, source -> target
	toSource    bool   // link up, target -> source
	heals       bool   // a broken link comes back for later contacts
	maxRunning  int
	srcDecision bool // the source sent (or may have sent) COMMIT
}

func (w *world) check(where string) {
	n := 0
	if w.srcCopy == copyRunning {
		n++
	}
	if w.tgtCopy == copyRunning {
		n++
	}
	if n > 1 {
		w.errs = append(w.errs, fmt.Sprintf("%s: two running copies at %s", w.name, where))
	}
	if w.srcCopy == copyDead && w.tgtCopy != copyRunning && w.tgtCopy != copyHeld {
		w.errs = append(w.errs, fmt.Sprintf("%s: the source's copy is dead and the target has %v at %s", w.name, w.tgtCopy, where))
	}
}

// crashSource: the source relocate dies; a ptrace-frozen copy runs on.
func (w *world) crashSource() {
	w.srcAlive = false
	if w.srcCopy == copyTraced {
		w.srcCopy = copyRunning // tracees resume when their tracer dies
	}
	w.check("source crash")
}

// crashTarget: the target relocate dies; its copy, held, stays frozen.
func (w *world) crashTarget() {
	w.tgtAlive = false
	w.check("target crash")
}

// targetAbort applies an abort to the target side.
func (w *world) targetAbort() {
	if w.tgtCopy == copyHeld {
		w.tgtCopy = copyDead
	}
	w.tgtRecord = ""
	w.tgt = tgtAborted
	w.check("target abort")
}

// targetResolve: a resolve reaches the target's record (from the source,
// or run there) with decision.
func (w *world) targetResolve(decision string) string {
	if w.tgtRecord == "" {
		return msgAborted
	}
	switch targetSettle(w.tgtRecord, decision, w.late, w.tgtAlive) {
	case tgtRunning:
		w.tgtRecord = stateRunning
		w.tgt = tgtRunning
		w.tgtCopy = copyRunning
		w.check("target resolve: resume")
		return msgRunning
	case tgtPrepared:
		return msgReady
	}
	w.targetAbort()
	return msgAborted
}

// sourceApply applies the source's settled state to its copy.
func (w *world) sourceApply(s srcState) {
	w.src = s
	switch s {
	case srcKilled:
		w.srcCopy = copyDead
		w.srcRecord = false
	case srcResumed:
		if w.srcCopy == copyHeld || w.srcCopy == copyTraced {
			w.srcCopy = copyRunning
		}
		w.srcRecord = false
	}
	w.check("source settles")
}

func runModel(at step, f faultKind) *world {
	w := &world{name: fmt.Sprintf("%s at %s", faultNames[f], stepNames[at]), srcCopy: copyTraced,
		srcAlive: true, tgtAlive: true, toTarget: true, toSource: true}
	// fault fires at step s, before that step's action
	fault := func(s step) {
		if s != at {
			return
		}
		switch f {
		case fCutBoth:
			w.toTarget, w.toSource, w.heals = false, false, true
		case fCutBothForever:
			w.toTarget, w.toSource = false, false
		case fCutToTarget:
			w.toTarget, w.heals = false, true
		case fCutToSource:
			w.toSource, w.heals = false, true
		case fCrashSource:
			w.crashSource()
		case fCrashTarget:
			w.crashTarget()
		case fDeadline:
			w.late = true
		}
	}
	lost := func(s step) bool { return s == at && f == fLose }
	toT := func(s step) bool { return w.toTarget && w.srcAlive && w.tgtAlive && !lost(s) }
	toS := func(s step) bool { return w.toSource && w.srcAlive && w.tgtAlive && !lost(s) }

	// Phase 1: stream and restore.
	fault(stStream)
	if w.srcAlive && w.toTarget && w.tgtAlive {
		w.tgt = targetStep(w.tgt, evImage)
		w.tgtCopy, w.tgtRecord = copyHeld, statePrepared
	} else if w.tgtAlive {
		w.tgt = targetStep(w.tgt, evCut)
	}
	w.check("restored")
	fault(stReady)
	gotReady := w.tgt == tgtPrepared && toS(stReady)
	if w.srcAlive && !gotReady {
		w.sourceApply(sourceStep(w.src, evFail)) // rollback; ABORT sent
		if toT(stReady) && w.tgt == tgtPrepared {
			w.targetAbort()
		}
	}
	if w.srcAlive && gotReady {
		fault(stHold)
		if w.srcAlive {
			w.src = sourceStep(w.src, evReady)
			w.srcRecord = true
			w.srcCopy = copyHeld
			w.srcDecision = true
			fault(stCommit)
		}
		// COMMIT reaches the target if the link holds and it waits still.
		if w.srcAlive && toT(stCommit) && w.tgtAlive && w.tgt == tgtPrepared {
			fault(stResume)
			if w.tgtAlive {
				if w.late {
					w.targetAbort()
				} else {
					w.tgt = targetStep(w.tgt, evCommit)
					w.tgtRecord = stateRunning
					w.tgtCopy = copyRunning
					w.check("target resumes")
				}
			}
		}
		if w.srcAlive {
			fault(stRunning)
		}
		var ans string
		if w.srcAlive && w.tgtAlive && w.toSource && !lost(stRunning) && w.toTarget {
			switch w.tgt {
			case tgtRunning:
				ans = msgRunning
			case tgtAborted:
				ans = msgAborted
			}
		}
		if w.srcAlive && ans == "" {
			// In doubt: the source asks again over new connections while
			// its deadline lasts; a healed link answers.
			w.src = sourceStep(w.src, evFail)
			if w.heals || (w.toTarget && w.toSource) {
				ans = w.targetResolve("commit")
			}
		}
		if w.srcAlive && ans != "" && ans != msgReady {
			if ans == msgRunning {
				fault(stKill)
			}
			if w.srcAlive {
				w.sourceApply(sourceSettle(ans, ""))
				if w.src == srcKilled {
					fault(stForget)
					if w.tgtAlive && w.toTarget && !lost(stForget) {
						w.tgtRecord = ""
					}
				}
			}
		}
	}
	// The target's own rules for a copy still waiting: its deadline.
	if w.tgtAlive && w.tgt == tgtPrepared {
		w.late = true
		w.targetAbort()
	}
	return w
}

// settle runs what the user does after: resolve on the source if it
// exited in doubt (or died holding), with the link back if it heals, else
// resolve on the target and then on the source with the user's word.
func (w *world) settle() {
	w.srcAlive, w.tgtAlive = false, false // every relocate has exited by now
	w.late = true                         // and every deadline has passed
	if w.srcRecord {
		if w.heals || (w.toTarget && w.toSource) {
			ans := w.targetResolve("commit")
			w.sourceApply(sourceSettle(ans, ""))
		} else {
			// Unreachable: the user runs resolve on the target, sees what
			// it says, and gives the source its word.
			ans := w.targetResolve("")
			decision := "abort"
			if ans == msgRunning {
				decision = "commit"
			}
			w.sourceApply(sourceSettle("", decision))
		}
	}
	if w.tgtCopy == copyHeld {
		w.targetResolve("")
	}
	if w.srcCopy == copyTraced {
		w.srcCopy = copyRunning
	}
}

func TestCommitEveryFault(t *testing.T) {
	outcomes := map[string]int{}
	for at := step(0); at < numSteps; at++ {
		for f := faultKind(0); f < numFaults; f++ {
			w := runModel(at, f)
			inDoubt := w.srcCopy == copyHeld
			w.settle()
			for _, e := range w.errs {
				t.Error(e)
			}
			n := 0
			if w.srcCopy == copyRunning {
				n++
			}
			if w.tgtCopy == copyRunning {
				n++
			}
			if n != 1 {
				t.Errorf("%s: %d running copies after settling (source %v, target %v)", w.name, n, w.srcCopy, w.tgtCopy)
			}
			if w.tgtCopy == copyHeld || w.srcCopy == copyHeld {
				t.Errorf("%s: a frozen copy is left after settling", w.name)
			}
			where := "source"
			if w.tgtCopy == copyRunning {
				where = "target"
			}
			if inDoubt {
				where += " (after resolve)"
			}
			outcomes[where]++
			t.Logf("%-26s -> runs on the %s", w.name, where)
		}
	}
	// Control: the happy path migrates, and the model can find a fault.
	if w := runModel(stStream, fNone); w.tgtCopy != copyRunning || w.srcCopy != copyDead {
		t.Errorf("no fault: source %v, target %v", w.srcCopy, w.tgtCopy)
	}
	t.Logf("outcomes: %v", outcomes)
}

// TestCommitModelCatchesAWrongRule: a source that kills its copy as soon
// as COMMIT is sent (what relocate did before) loses both copies when the
// link breaks with the commit on it; the model's check must say so.
func TestCommitModelCatchesAWrongRule(t *testing.T) {
	w := runModel(stCommit, fCutBothForever)
	w.srcCopy = copyDead // the wrong rule: kill on sending COMMIT
	w.check("wrong rule")
	if len(w.errs) == 0 {
		t.Fatal("killing at COMMIT with the commit lost was not caught")
	}
	// And a target that resumes without COMMIT runs beside a resumed source.
	w = runModel(stReady, fLose)
	w.tgtCopy = copyRunning
	w.check("wrong rule 2")
	if len(w.errs) == 0 {
		t.Fatal("resuming without COMMIT was not caught")
	}
}
