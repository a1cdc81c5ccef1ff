// Package testscripts holds relocate's end-to-end tests: testscript files
// under testdata/ that read like a sysadmin's session, and the workloads
// they run (workloads/), which check their own state after a restore.
package testscripts
