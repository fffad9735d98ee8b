package workers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// FileSource keeps a Registry in step with the workers file
// (Config.WorkersFile): it reads the file when Run starts and again at each
// value on its reload channel (SIGHUP). Run owns no goroutine but the
// caller's.
type FileSource struct {
	cfg    Config
	reg    *Registry
	reload <-chan os.Signal
}

// NewFileSource returns a source of cfg.WorkersFile feeding reg, reading
// the file again at each value on reload (nil: never). The caller owns
// reload: `router serve` gives a channel that signal.Notify fills with
// SIGHUP. It starts nothing and reads nothing.
func NewFileSource(cfg Config, reg *Registry, reload <-chan os.Signal) (*FileSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.WorkersFile == "" || reg == nil {
		return nil, errors.New("workers file source: no workers file or no registry")
	}
	return &FileSource{cfg: cfg, reg: reg, reload: reload}, nil
}

// Run reads the file, then reads it again at each reload until ctx is done,
// and returns nil then. A first reading that fails ends Run with its error
// (the router has no workers to serve from it); a later one is logged and
// counted, and the last good set stays.
func (f *FileSource) Run(ctx context.Context) error {
	if err := f.load(false); err != nil {
		return err
	}
	reload := f.reload
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-reload:
			if !ok {
				reload = nil // closed: no more reloads
				continue
			}
			_ = f.load(true) // logged by the registry
		}
	}
}

// load reads and decodes the file and hands the registry its workers, or
// records the failure (logged when logIt) and returns it.
func (f *FileSource) load(logIt bool) error {
	ws, err := ReadWorkersFile(f.cfg.WorkersFile, f.cfg)
	if err != nil {
		f.reg.fileFailed(f.cfg.WorkersFile, err, logIt)
		return err
	}
	f.reg.loadFile(f.cfg.WorkersFile, ws)
	return nil
}

// ReadWorkersFile reads and decodes the workers file at path
// (DecodeWorkersFile). Every error wraps ErrWorkersFile.
func ReadWorkersFile(path string, cfg Config) ([]FileWorker, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWorkersFile, err)
	}
	defer fh.Close()
	// One byte past the limit tells a file over it from one at it.
	data, err := io.ReadAll(io.LimitReader(fh, MaxWorkersFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrWorkersFile, path, err)
	}
	return DecodeWorkersFile(data, cfg)
}
