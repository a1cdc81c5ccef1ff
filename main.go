// Command relocate checkpoints a running Linux process and restores it,
// locally or on another machine over SSH.
package main

import (
	"os"

	"github.com/relocate/relocate/cmd"
)

func main() { os.Exit(cmd.Main()) }
