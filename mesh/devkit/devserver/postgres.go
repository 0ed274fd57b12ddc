package devserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresSuperuser is the superuser initdb creates in a dev server; its password is Postgres.Password.
const PostgresSuperuser = "meshplane"

// PostgresBinDir finds the directory holding initdb and postgres: $MESHPLANE_POSTGRES_BIN, else the
// newest /usr/lib/postgresql/<version>/bin that Debian's postgresql package installs (`make tools`
// installs it; Debian keeps these binaries off PATH).
func PostgresBinDir() (string, error) {
	if d := os.Getenv("MESHPLANE_POSTGRES_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return pgMajor(b) - pgMajor(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL not found in /usr/lib/postgresql/*/bin: install Debian's postgresql package " +
		"with `make tools` (or `scripts/tools.sh debian`), or set MESHPLANE_POSTGRES_BIN to the directory holding initdb and postgres")
}

func pgMajor(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Postgres is a running PostgreSQL dev server.
type Postgres struct {
	*Server
	// Password is the superuser's password: services get it in DATABASE_PASSWORD, never in a URL.
	Password string
	// DataDir is the cluster's data directory. Run as root, it is a directory of its own under the system
	// temporary directory, owned by the unprivileged user (which cannot enter a root-owned test or state
	// directory); Close removes it.
	DataDir string

	opts       Options
	binDir     string
	credential *syscall.Credential
	ownDataDir bool
}

// StartPostgres creates a database cluster with initdb (superuser PostgresSuperuser, a random password,
// password authentication) and runs postgres on 127.0.0.1:o.Port (0 picks a free port) until it accepts
// connections. A session whose client died is ended within a second (client_connection_check_interval),
// as a production server should be configured. PostgreSQL refuses to run as root, so as root both run as the user "postgres" (which
// Debian's package creates) or else "nobody". The server listens on TCP only (no Unix socket) and runs
// with fsync off: a dev server loses nothing when postgres alone stops or crashes, only on a machine
// crash. Stop ends it with a fast shutdown (SIGINT: sessions are closed, not waited for); Start runs it
// again on the same port and data; Close stops it and removes its data.
func StartPostgres(ctx context.Context, o Options) (*Postgres, error) {
	binDir, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	if _, err := ports(&o, 0); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	p := &Postgres{opts: o, binDir: binDir, Password: randomPassword()}
	if os.Geteuid() == 0 {
		if p.credential, err = unprivilegedUser(); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
		top, err := os.MkdirTemp("", "meshplane-postgres-")
		if err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
		p.DataDir, p.ownDataDir = filepath.Join(top, "data"), true
		if err := os.Chown(top, int(p.credential.Uid), int(p.credential.Gid)); err != nil {
			_ = os.RemoveAll(top)
			return nil, fmt.Errorf("start postgres: hand %s to uid %d: %w", top, p.credential.Uid, err)
		}
	} else {
		p.DataDir = filepath.Join(o.Dir, "data")
	}
	if err := p.initdb(ctx); err != nil {
		p.removeData()
		return nil, err
	}
	if err := p.Start(ctx); err != nil {
		p.removeData()
		return nil, err
	}
	return p, nil
}

func (p *Postgres) initdb(ctx context.Context) error {
	pwfile := filepath.Join(filepath.Dir(p.DataDir), "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.Password+"\n"), 0o600); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	defer func() { _ = os.Remove(pwfile) }()
	if p.credential != nil {
		if err := os.Chown(pwfile, int(p.credential.Uid), int(p.credential.Gid)); err != nil {
			return fmt.Errorf("initdb: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(p.binDir, "initdb"), "-D", p.DataDir, "-U", PostgresSuperuser,
		"--pwfile", pwfile, "--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C", "--no-sync")
	cmd.Dir = filepath.Dir(p.DataDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.credential}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", p.DataDir, err, out)
	}
	return nil
}

// Start runs postgres on the server's port and data directory: the first time from StartPostgres,
// again after Stop (clients configured with its address reconnect).
func (p *Postgres) Start(ctx context.Context) error {
	addr := hostPort(p.opts.Port)
	args := []string{"-D", p.DataDir, "-p", strconv.Itoa(p.opts.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "log_min_messages=warning",
		// End the session of a client that died mid-query (a killed replica waiting on a lock) within a
		// second, rather than when the query finishes.
		"-c", "client_connection_check_interval=1s"}
	s, err := Run(ctx, p.opts, Program{Name: "postgres", Bin: filepath.Join(p.binDir, "postgres"), Args: args, Addr: addr,
		Credential: p.credential, WorkDir: filepath.Dir(p.DataDir), StopSignal: syscall.SIGINT,
		Ready: func(ctx context.Context) error {
			conn, err := p.Connect(ctx, "postgres")
			if err != nil {
				return err
			}
			return conn.Close(ctx)
		}})
	if err != nil {
		return err
	}
	p.Server = s
	return nil
}

// Close stops the server and removes its data directory.
func (p *Postgres) Close() error {
	err := p.Stop()
	p.removeData()
	return err
}

func (p *Postgres) removeData() {
	if p.ownDataDir {
		_ = os.RemoveAll(filepath.Dir(p.DataDir))
	} else {
		_ = os.RemoveAll(p.DataDir)
	}
}

// URL is the connection URL of database db as the superuser, without the password.
func (p *Postgres) URL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User(PostgresSuperuser), Host: hostPort(p.opts.Port), Path: "/" + db,
		RawQuery: "sslmode=disable"}
	return u.String()
}

// Connect opens a connection to database db as the superuser.
func (p *Postgres) Connect(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(p.URL(db))
	if err != nil {
		return nil, err
	}
	cfg.Password = p.Password
	cfg.ConnectTimeout = 5 * time.Second
	return pgx.ConnectConfig(ctx, cfg)
}

// CreateDatabase creates database name (a plain identifier) unless it exists.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	conn, err := p.Connect(ctx, "postgres")
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// unprivilegedUser is the user postgres runs as when this process is root.
func unprivilegedUser() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root and neither user postgres nor nobody exists to run PostgreSQL as (it refuses root)")
}

func randomPassword() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
