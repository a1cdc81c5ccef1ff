package cmd

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/term"
)

// askPassphrase asks on the controlling terminal, as ssh does, so that it
// works with stdin and stdout redirected; without a terminal it fails and
// the key is reported as passphrase-protected.
func askPassphrase(prompt string) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, errors.New("no terminal to ask on (load the key into ssh-agent)")
	}
	defer tty.Close()
	fmt.Fprint(tty, prompt)
	pass, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	if err != nil {
		return nil, fmt.Errorf("reading the passphrase: %w", err)
	}
	return pass, nil
}
