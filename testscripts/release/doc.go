// Package scripts holds release.sh, which builds the release archives as
// .goreleaser.yaml does, and the test that builds and unpacks one. It is
// a package only for that test (go test ./... runs it beside the others).
package release
