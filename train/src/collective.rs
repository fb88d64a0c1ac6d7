//! Several training processes (nodes) summing their gradients: the one piece of data-parallel
//! training burn 0.22.1 does not provide. Its `DistributedDataParallel` strategy runs the devices
//! of *one* process (its `DistributedConfig` holds only the reduce operation, no address or
//! rank), and flex implements no collective at all. So processes meet here over TCP.
//!
//! The shape is a star: rank 0 listens on the rendezvous address, every other rank connects,
//! sends its buffer, and receives the sum. Rank 0 adds the buffers in rank order, so every rank
//! gets the same bits and the replicas' optimizer steps stay identical. The heads are small next
//! to the base (≈ 1 M parameters for SmolLM2-135M, ≈ 51 M for a 7B base), so one gradient
//! exchange per optimizer step is cheap beside the step's base and head passes.
//!
//! A handshake carries a run key (the run's identity and recipe), so processes launched with
//! different flags refuse to train together instead of silently averaging different runs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::error::{Result, TrainError};

const MAGIC: &[u8; 8] = b"TSWIFTG1";

/// Where and as whom this process joins the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// Processes in the group.
    pub world: usize,
    /// This process's rank, `0..world`; rank 0 writes checkpoints and the heads.
    pub rank: usize,
    /// Rank 0's listening address (`host:port`).
    pub master: String,
    /// How long to wait for the others.
    pub timeout: Duration,
}

impl Rendezvous {
    /// From flags, falling back to the torchrun / Slurm-style environment (`WORLD_SIZE`,
    /// `RANK`, `MASTER_ADDR`, `MASTER_PORT`). `None` when this is a single-process run.
    pub fn from_parts(
        nodes: Option<usize>,
        rank: Option<usize>,
        master: Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
        timeout: Duration,
    ) -> Result<Option<Self>> {
        let parse = |name: &str, v: String| -> Result<usize> {
            v.trim().parse::<usize>().map_err(|_| {
                TrainError::Usage(format!("{name}={v} is not a non-negative whole number"))
            })
        };
        let world = match nodes {
            Some(n) => n,
            None => match env("WORLD_SIZE") {
                Some(v) => parse("WORLD_SIZE", v)?,
                None => 1,
            },
        };
        if world == 0 {
            return Err(TrainError::Usage("--nodes must be at least 1".into()));
        }
        if world == 1 {
            return Ok(None);
        }
        let rank = match rank {
            Some(r) => r,
            None => match env("RANK") {
                Some(v) => parse("RANK", v)?,
                None => {
                    return Err(TrainError::Usage(format!(
                        "--nodes {world} needs --node-rank (or RANK) for this process"
                    )));
                }
            },
        };
        if rank >= world {
            return Err(TrainError::Usage(format!(
                "--node-rank {rank} is out of range for --nodes {world} (ranks 0..{})",
                world - 1
            )));
        }
        let master = match master {
            Some(m) => m,
            None => match (env("MASTER_ADDR"), env("MASTER_PORT")) {
                (Some(a), Some(p)) => format!("{a}:{p}"),
                _ => {
                    return Err(TrainError::Usage(format!(
                        "--nodes {world} needs --master HOST:PORT (or MASTER_ADDR and MASTER_PORT), rank 0's address"
                    )));
                }
            },
        };
        Ok(Some(Self {
            world,
            rank,
            master,
            timeout,
        }))
    }
}

/// A connected group of training processes.
pub struct Group {
    rank: usize,
    world: usize,
    /// Rank 0: the other ranks' connections, by rank (index 0 unused). Other ranks: the one
    /// connection to rank 0.
    links: Vec<Option<TcpStream>>,
}

fn io_err(what: &str, e: std::io::Error) -> TrainError {
    TrainError::Distributed(format!("distributed training: {what}: {e}"))
}

fn resolve(master: &str) -> Result<SocketAddr> {
    master
        .to_socket_addrs()
        .map_err(|e| io_err(&format!("cannot resolve --master {master}"), e))?
        .next()
        .ok_or_else(|| TrainError::Usage(format!("--master {master} resolves to no address")))
}

fn write_frame(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(&(bytes.len() as u64).to_le_bytes())?;
    s.write_all(bytes)?;
    s.flush()
}

fn read_frame(s: &mut TcpStream, max: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a peer sent a frame of {len} bytes where at most {max} were expected"),
        ));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn hello(rank: usize, world: usize, key: &str) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&(rank as u64).to_le_bytes());
    v.extend_from_slice(&(world as u64).to_le_bytes());
    v.extend_from_slice(key.as_bytes());
    v
}

fn parse_hello(b: &[u8]) -> Option<(usize, usize, String)> {
    if b.len() < 24 || &b[..8] != MAGIC {
        return None;
    }
    let rank = u64::from_le_bytes(b[8..16].try_into().ok()?) as usize;
    let world = u64::from_le_bytes(b[16..24].try_into().ok()?) as usize;
    Some((rank, world, String::from_utf8_lossy(&b[24..]).into_owned()))
}

impl Group {
    /// Meets the other processes. `key` names the run; every rank must present the same one.
    pub fn join(r: &Rendezvous, key: &str) -> Result<Self> {
        let addr = resolve(&r.master)?;
        let deadline = Instant::now() + r.timeout;
        let mut links: Vec<Option<TcpStream>> = (0..r.world).map(|_| None).collect();
        if r.rank == 0 {
            let listener = TcpListener::bind(addr)
                .map_err(|e| io_err(&format!("rank 0 cannot listen on {}", r.master), e))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| io_err("listener", e))?;
            let mut joined = 1;
            while joined < r.world {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).map_err(|e| io_err("accept", e))?;
                        s.set_read_timeout(Some(r.timeout))
                            .map_err(|e| io_err("accept", e))?;
                        let b = read_frame(&mut s, 1 << 16).map_err(|e| io_err("handshake", e))?;
                        let Some((rank, world, their_key)) = parse_hello(&b) else {
                            return Err(TrainError::Distributed(format!(
                                "distributed training: something that is not a train-heads rank connected to {}",
                                r.master
                            )));
                        };
                        let verdict = if world != r.world {
                            Some(format!(
                                "rank {rank} was launched with --nodes {world}, rank 0 with --nodes {}",
                                r.world
                            ))
                        } else if rank == 0 || rank >= r.world || links[rank].is_some() {
                            Some(format!(
                                "two processes claim rank {rank} (or it is out of range)"
                            ))
                        } else if their_key != key {
                            Some(format!(
                                "rank {rank} was launched for a different run (data, recipe, heads or base differ from rank 0's)"
                            ))
                        } else {
                            None
                        };
                        let reply: &[u8] = if verdict.is_some() { b"no" } else { b"ok" };
                        let _ = write_frame(&mut s, reply);
                        if let Some(v) = verdict {
                            return Err(TrainError::Distributed(format!(
                                "distributed training: {v}"
                            )));
                        }
                        s.set_nodelay(true).ok();
                        links[rank] = Some(s);
                        joined += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return Err(TrainError::Distributed(format!(
                                "distributed training: only {joined} of {} ranks reached {} within {} s",
                                r.world,
                                r.master,
                                r.timeout.as_secs()
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(io_err("accept", e)),
                }
            }
        } else {
            let mut s = loop {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(s) => break s,
                    Err(e) => {
                        if Instant::now() > deadline {
                            return Err(io_err(
                                &format!(
                                    "rank {} could not reach rank 0 at {} within {} s",
                                    r.rank,
                                    r.master,
                                    r.timeout.as_secs()
                                ),
                                e,
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            };
            s.set_read_timeout(Some(r.timeout))
                .map_err(|e| io_err("connect", e))?;
            write_frame(&mut s, &hello(r.rank, r.world, key))
                .map_err(|e| io_err("handshake", e))?;
            let reply = read_frame(&mut s, 16).map_err(|e| io_err("handshake", e))?;
            if reply != b"ok" {
                return Err(TrainError::Distributed(format!(
                    "distributed training: rank 0 at {} refused rank {} (different --nodes, run or a duplicate rank; rank 0 says why)",
                    r.master, r.rank
                )));
            }
            s.set_nodelay(true).ok();
            // Reductions may wait on the slowest rank's whole step: no read timeout from here.
            s.set_read_timeout(None).ok();
            links[0] = Some(s);
        }
        if r.rank == 0 {
            for s in links.iter().flatten() {
                s.set_read_timeout(None).ok();
            }
        }
        Ok(Self {
            rank: r.rank,
            world: r.world,
            links,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Replaces `buf` on every rank with the sum over ranks (added in rank order on rank 0).
    pub fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(buf, f32::to_le_bytes, f32::from_le_bytes)
    }

    /// [`Group::all_reduce_sum_f32`] for `f64` (statistics: loss sums, counts).
    pub fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        self.all_reduce_sum(buf, f64::to_le_bytes, f64::from_le_bytes)
    }

    fn all_reduce_sum<T, const W: usize>(
        &mut self,
        buf: &mut [T],
        to: fn(T) -> [u8; W],
        from: fn([u8; W]) -> T,
    ) -> Result<()>
    where
        T: Copy + std::ops::Add<Output = T>,
    {
        let read = |c: &[u8]| from(c.try_into().expect("chunks of the element width"));
        let bytes: Vec<u8> = buf.iter().flat_map(|&v| to(v)).collect();
        let out = self.reduce_bytes(bytes, W, &|acc, add| {
            for (a, b) in acc.chunks_exact_mut(W).zip(add.chunks_exact(W)) {
                let sum = read(a) + read(b);
                a.copy_from_slice(&to(sum));
            }
        })?;
        for (v, c) in buf.iter_mut().zip(out.chunks_exact(W)) {
            *v = read(c);
        }
        Ok(())
    }

    /// True on every rank when all ranks passed the same `value` (a checksum of the replicas).
    pub fn all_agree(&mut self, value: u64) -> Result<bool> {
        let mine = value.to_le_bytes().to_vec();
        if self.rank == 0 {
            let mut same = true;
            for r in 1..self.world {
                let s = self.links[r].as_mut().expect("rank 0 holds every link");
                let b = read_frame(s, 8).map_err(|e| io_err(&format!("rank {r} left"), e))?;
                same &= b == mine;
            }
            for r in 1..self.world {
                let s = self.links[r].as_mut().expect("rank 0 holds every link");
                write_frame(s, &[same as u8]).map_err(|e| io_err(&format!("rank {r} left"), e))?;
            }
            Ok(same)
        } else {
            let s = self.links[0]
                .as_mut()
                .expect("a rank holds its link to rank 0");
            write_frame(s, &mine).map_err(|e| io_err("rank 0 left", e))?;
            let b = read_frame(s, 1).map_err(|e| io_err("rank 0 left", e))?;
            Ok(b == [1])
        }
    }

    fn reduce_bytes(
        &mut self,
        mut mine: Vec<u8>,
        width: usize,
        add: &dyn Fn(&mut [u8], &[u8]),
    ) -> Result<Vec<u8>> {
        let n = mine.len();
        if self.rank == 0 {
            for r in 1..self.world {
                let s = self.links[r].as_mut().expect("rank 0 holds every link");
                let theirs = read_frame(s, n).map_err(|e| io_err(&format!("rank {r} left"), e))?;
                if theirs.len() != n || !n.is_multiple_of(width) {
                    return Err(TrainError::Distributed(format!(
                        "distributed training: rank {r} sent {} bytes where {n} were expected (a different model or heads?)",
                        theirs.len()
                    )));
                }
                add(&mut mine, &theirs);
            }
            for r in 1..self.world {
                let s = self.links[r].as_mut().expect("rank 0 holds every link");
                write_frame(s, &mine).map_err(|e| io_err(&format!("rank {r} left"), e))?;
            }
            Ok(mine)
        } else {
            let s = self.links[0]
                .as_mut()
                .expect("a rank holds its link to rank 0");
            write_frame(s, &mine).map_err(|e| io_err("rank 0 left", e))?;
            let sum = read_frame(s, n).map_err(|e| io_err("rank 0 left", e))?;
            if sum.len() != n {
                return Err(TrainError::Distributed(
                    "distributed training: rank 0 answered with a buffer of another size".into(),
                ));
            }
            Ok(sum)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn rdv(world: usize, rank: usize, port: u16) -> Rendezvous {
        Rendezvous {
            world,
            rank,
            master: format!("127.0.0.1:{port}"),
            timeout: Duration::from_secs(20),
        }
    }

    #[test]
    fn three_ranks_sum_in_rank_order_and_agree() {
        let port = free_port();
        let handles: Vec<_> = (0..3)
            .map(|rank| {
                std::thread::spawn(move || {
                    let mut g = Group::join(&rdv(3, rank, port), "run-a").unwrap();
                    let mut v = vec![rank as f32 + 1.0, 0.5 * rank as f32];
                    g.all_reduce_sum_f32(&mut v).unwrap();
                    let mut s = vec![rank as f64];
                    g.all_reduce_sum_f64(&mut s).unwrap();
                    let same = g.all_agree(7).unwrap();
                    let differ = g.all_agree(rank as u64).unwrap();
                    (v, s, same, differ)
                })
            })
            .collect();
        for h in handles {
            let (v, s, same, differ) = h.join().unwrap();
            assert_eq!(v, vec![6.0, 1.5]);
            assert_eq!(s, vec![3.0]);
            assert!(same);
            assert!(!differ, "different checksums must not agree");
        }
    }

    #[test]
    fn a_rank_of_another_run_is_refused() {
        let port = free_port();
        let root = std::thread::spawn(move || Group::join(&rdv(2, 0, port), "run-a").err());
        let other = std::thread::spawn(move || Group::join(&rdv(2, 1, port), "run-b").err());
        let e0 = root.join().unwrap().expect("rank 0 refuses").to_string();
        let e1 = other
            .join()
            .unwrap()
            .expect("rank 1 is refused")
            .to_string();
        assert!(e0.contains("different run"), "{e0}");
        assert!(e1.contains("refused"), "{e1}");
    }

    #[test]
    fn rendezvous_comes_from_flags_or_the_environment() {
        let t = Duration::from_secs(1);
        let none = |_: &str| None;
        assert_eq!(
            Rendezvous::from_parts(None, None, None, &none, t).unwrap(),
            None
        );
        let env = |k: &str| match k {
            "WORLD_SIZE" => Some("2".to_string()),
            "RANK" => Some("1".to_string()),
            "MASTER_ADDR" => Some("10.0.0.1".to_string()),
            "MASTER_PORT" => Some("29500".to_string()),
            _ => None,
        };
        let r = Rendezvous::from_parts(None, None, None, &env, t)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.world, r.rank, r.master.as_str()),
            (2, 1, "10.0.0.1:29500")
        );
        let e = Rendezvous::from_parts(Some(2), Some(2), Some("h:1".into()), &none, t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
        let e = Rendezvous::from_parts(Some(2), Some(0), None, &none, t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--master"), "{e}");
        let bad = |k: &str| (k == "WORLD_SIZE").then(|| "two".to_string());
        let e = Rendezvous::from_parts(None, None, None, &bad, t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("WORLD_SIZE=two"), "{e}");
    }
}
