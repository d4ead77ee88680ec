package master

// UnsafeNoFsyncEnv names the environment variable of the unsafe no-fsync
// hook: set to 1, 'fileshare master' sets StorageHooks.NoSync, so the
// master acknowledges writes it never fsynced. It exists only so the
// fault harness can prove that its power-loss faults catch a master that
// does not fsync what it acknowledges; never set it in production.
const UnsafeNoFsyncEnv = "FILESHARE_UNSAFE_NO_FSYNC"
