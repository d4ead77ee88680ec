//go:build linux

package peer

import (
	"io/fs"
	"syscall"
)

func sysSeal(fi fs.FileInfo) fileSeal {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileSeal{}
	}
	return fileSeal{Dev: uint64(st.Dev), Ino: uint64(st.Ino), Ctime: int64(st.Ctim.Sec)*1e9 + int64(st.Ctim.Nsec)}
}
