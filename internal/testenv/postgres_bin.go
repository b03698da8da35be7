package testenv

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// lookupCredential returns the credential of OS user name.
func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// traversable checks that every user may enter dir and its parents, as the
// postgres OS user must to reach its data directory.
func traversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("directory %s is not searchable by other users, so the postgres OS user cannot reach the data directory; point TMPDIR elsewhere", d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// chown gives the tree at root to the OS user postgres runs as, if any.
func (p *Postgres) chown(root string) error {
	if p.cred == nil {
		return nil
	}
	uid, gid := int(p.cred.Uid), int(p.cred.Gid)
	return filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// pgBinDir finds the directory holding initdb and postgres: $CDCD_TEST_PG_BIN,
// else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin
// (Debian, Ubuntu), else $PATH.
func pgBinDir() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if d := os.Getenv(envPGBin); d != "" {
		if !has(d) {
			return "", fmt.Errorf("%s=%s: no initdb and postgres there", envPGBin, d)
		}
		return d, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); has(d) {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(binDir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		if d := filepath.Dir(path); has(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, postgres) not found: install them or set %s", envPGBin)
}

// Tool returns the path of a PostgreSQL client program (pg_recvlogical,
// pgbench) from the server's installation.
func Tool(name string) (string, error) {
	dir, err := pgBinDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return exec.LookPath(name)
	}
	return p, nil
}
