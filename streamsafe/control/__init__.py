"""Control topics every worker reads whole (policies; hash banks): broadcast, not partitioned."""
