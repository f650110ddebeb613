//! Recycled host buffers for CPU tensors: memory is faulted in once and reused across operations
//! and layers, instead of being returned to the system and zeroed again by the kernel.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use crate::backend::MemoryUse;

/// Freed buffers are kept for reuse up to twice the peak of live tensor memory (at least this
/// many words), oldest dropped first: enough to hold every distinct buffer of a batch, so the
/// next batch faults nothing in; and never more than a quarter of the machine's memory.
const MIN_RETAINED_WORDS: usize = 1 << 24;

/// The most words the pool keeps free: a quarter of physical memory (8 GiB where unknown).
fn retained_limit_words() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let bytes = physical_memory_bytes().unwrap_or(32 << 30);
        (bytes / 4 / 4).max(MIN_RETAINED_WORDS)
    })
}

/// Physical memory of the machine, where the system says.
fn physical_memory_bytes() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf only reads system configuration.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && size > 0 {
            return Some(pages as usize * size as usize);
        }
    }
    None
}

/// A pool of `u32` buffers. A request takes the smallest free buffer that holds it with at most
/// half of it to spare, so the tensors of a layer (equal shapes, chunk after chunk, batch after
/// batch) and of the next layers (a limb or two less) take the memory of the previous ones.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    free: VecDeque<Vec<u32>>,
    free_words: usize,
    live_words: usize,
    peak_words: usize,
    fresh_words: usize,
}

impl Pool {
    /// An empty pool.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of `len` words. Its contents are unspecified (a recycled buffer keeps the
    /// residues of its last use): callers overwrite every word they later read.
    pub(crate) fn take(self: &Arc<Self>, len: usize) -> Buf {
        let reused = {
            let mut st = self.state();
            let pick = st
                .free
                .iter()
                .enumerate()
                .filter(|(_, v)| v.len() >= len && v.len() <= len.max(1) + len / 2)
                .min_by_key(|(_, v)| v.len())
                .map(|(i, _)| i);
            let v = pick.and_then(|i| st.free.remove(i));
            if let Some(v) = &v {
                st.free_words -= v.len();
            }
            v
        };
        // A fresh buffer comes from calloc: zero pages, faulted in on first write.
        let fresh = reused.is_none();
        let v = reused.unwrap_or_else(|| fresh_buffer(len));
        {
            let mut st = self.state();
            if fresh {
                st.fresh_words += len;
            }
            st.live_words += v.len();
            st.peak_words = st.peak_words.max(st.live_words);
        }
        Buf {
            v,
            len,
            pool: Some(self.clone()),
        }
    }

    /// A buffer holding a copy of `data`.
    pub(crate) fn copy_of(self: &Arc<Self>, data: &[u32]) -> Buf {
        let mut b = self.take(data.len());
        b.copy_from_slice(data);
        b
    }

    /// Wraps a vector the caller owns (no copy); it joins the pool when dropped.
    pub(crate) fn adopt(self: &Arc<Self>, v: Vec<u32>) -> Buf {
        let mut v = v;
        let len = v.len();
        v.resize(v.capacity(), 0);
        let mut st = self.state();
        st.live_words += v.len();
        st.peak_words = st.peak_words.max(st.live_words);
        Buf {
            v,
            len,
            pool: Some(self.clone()),
        }
    }

    fn give(&self, v: Vec<u32>) {
        let evicted = {
            let mut st = self.state();
            st.live_words -= v.len();
            if v.is_empty() {
                return;
            }
            st.free_words += v.len();
            st.free.push_back(v);
            let cap = (2 * st.peak_words)
                .max(MIN_RETAINED_WORDS)
                .min(retained_limit_words());
            let mut evicted = Vec::new();
            while st.free_words > cap {
                match st.free.pop_front() {
                    Some(old) => {
                        st.free_words -= old.len();
                        evicted.push(old);
                    }
                    None => break,
                }
            }
            evicted
        };
        drop(evicted); // returned to the system outside the lock
    }

    fn forget(&self, words: usize) {
        self.state().live_words -= words;
    }

    /// Live, peak and pooled tensor memory.
    pub(crate) fn usage(&self) -> MemoryUse {
        let st = self.state();
        MemoryUse {
            live_bytes: st.live_words as u64 * 4,
            peak_bytes: st.peak_words as u64 * 4,
            pooled_bytes: st.free_words as u64 * 4,
            fresh_bytes: st.fresh_words as u64 * 4,
        }
    }
}

/// Buffers of at least this many words are backed by transparent huge pages where the system
/// offers them (fewer, cheaper page faults on first touch).
const HUGE_PAGE_WORDS: usize = 1 << 20;

/// A new zeroed buffer from the system (calloc: zero pages, faulted in on first write).
fn fresh_buffer(len: usize) -> Vec<u32> {
    let v = vec![0u32; len];
    #[cfg(target_os = "linux")]
    if len >= HUGE_PAGE_WORDS {
        // madvise wants a page-aligned start: advise the whole pages inside the buffer.
        const PAGE: usize = 4096;
        let start = v.as_ptr() as usize;
        let end = start + len * std::mem::size_of::<u32>();
        let first = start.next_multiple_of(PAGE);
        if end > first {
            // SAFETY: advice on whole pages inside memory this vector owns; it changes no
            // contents and no mapping the vector relies on. A refusal (THP disabled) leaves
            // ordinary pages, which is fine.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    (end - first) / PAGE * PAGE,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    v
}

/// A buffer of the pool: `len` words (of a possibly larger allocation); returns to the pool when
/// dropped.
#[derive(Debug)]
pub(crate) struct Buf {
    v: Vec<u32>,
    len: usize,
    pool: Option<Arc<Pool>>,
}

impl Buf {
    /// The words, as a vector of exactly `len` words, taken out of the pool.
    pub(crate) fn into_vec(mut self) -> Vec<u32> {
        let mut v = std::mem::take(&mut self.v);
        if let Some(pool) = self.pool.take() {
            pool.forget(v.len());
        }
        v.truncate(self.len);
        v
    }
}

impl Deref for Buf {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &self.v[..self.len]
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u32] {
        &mut self.v[..self.len]
    }
}

impl Clone for Buf {
    fn clone(&self) -> Self {
        match &self.pool {
            Some(pool) => pool.copy_of(self),
            None => Buf {
                v: self.to_vec(),
                len: self.len,
                pool: None,
            },
        }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give(std::mem::take(&mut self.v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_counted() {
        let pool = Pool::new();
        let a = pool.take(1000);
        let ptr = a.v.as_ptr();
        assert_eq!(pool.usage().live_bytes, 4000);
        drop(a);
        assert_eq!(pool.usage().live_bytes, 0);
        assert_eq!(pool.usage().pooled_bytes, 4000);
        // A request that leaves at most a third of the buffer unused takes the same memory back.
        let b = pool.take(850);
        assert_eq!(b.len(), 850);
        assert_eq!(b.v.as_ptr(), ptr);
        assert_eq!(pool.usage().peak_bytes, 4000);
        // Smaller: a new buffer.
        let c = pool.take(100);
        assert_ne!(c.v.as_ptr(), ptr);
        let v = b.into_vec();
        assert_eq!(v.len(), 850);
        assert_eq!(pool.usage().live_bytes, 400);
        drop(c);
        assert_eq!(pool.usage().live_bytes, 0);
    }
}
