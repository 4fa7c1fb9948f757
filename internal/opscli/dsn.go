package opscli

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// resolve returns the DSN of f: -db, else the first line of -db-file,
// else $EVENTGEN_DSN. Giving both -db and -db-file is an error.
func (f *dbFlags) resolve() (string, error) {
	switch {
	case f.dsn != "" && f.dsnFile != "":
		return "", errors.New("give -db or -db-file, not both")
	case f.dsn != "":
		return f.dsn, nil
	case f.dsnFile != "":
		return firstLineOf(f.dsnFile, "-db-file")
	}
	if dsn := strings.TrimSpace(os.Getenv(EnvDSN)); dsn != "" {
		return dsn, nil
	}
	return "", fmt.Errorf("no database: set $%s, or give -db-file FILE (or -db DSN)", EnvDSN)
}

// firstLineOf reads the first line of a file that holds a secret, such as
// a DSN or a token, trimmed. The error names the flag, not the contents.
func firstLineOf(path, flagName string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if line = strings.TrimSpace(line); line == "" {
		return "", fmt.Errorf("%s: %s is empty", flagName, path)
	}
	return line, nil
}
