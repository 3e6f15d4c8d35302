# Batch: owns a llama_batch (token ids, positions, sequence ids, output flags).

cdef class Batch:
    """A llama_batch of up to `capacity` tokens, each in up to `n_seq_max` sequences.

    Batch(capacity, n_seq_max=1)
    """
    cdef L.llama_batch _batch
    cdef readonly int32_t capacity
    cdef readonly int32_t n_seq_max
    cdef bint _alive

    def __cinit__(self, int32_t capacity, int32_t n_seq_max=1):
        self._alive = False
        if capacity < 1:
            raise ValueError(f"Batch capacity must be >= 1, got {capacity}")
        if n_seq_max < 1:
            raise ValueError(f"Batch n_seq_max must be >= 1, got {n_seq_max}")
        self._batch = L.llama_batch_init(capacity, 0, n_seq_max)
        if self._batch.token == NULL:
            raise MemoryError("llama_batch_init failed")
        self._batch.n_tokens = 0
        self.capacity = capacity
        self.n_seq_max = n_seq_max
        self._alive = True

    def __dealloc__(self):
        if self._alive:
            L.llama_batch_free(self._batch)
            self._alive = False

    def close(self):
        if self._alive:
            L.llama_batch_free(self._batch)
            self._alive = False

    @property
    def closed(self):
        return not self._alive

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    cdef int _check(self) except -1:
        if not self._alive:
            raise ClosedError("this Batch is closed")
        return 0

    @property
    def n_tokens(self):
        self._check()
        return self._batch.n_tokens

    def __len__(self):
        return self._batch.n_tokens if self._alive else 0

    def clear(self):
        self._check()
        self._batch.n_tokens = 0

    def add(self, int32_t token, int32_t pos, seq_ids=(0,), bint logits=False):
        """Append one token at position `pos` for the given sequence ids."""
        self._check()
        cdef int32_t i = self._batch.n_tokens
        cdef int32_t j = 0
        if i >= self.capacity:
            raise IndexError(f"Batch is full ({self.capacity} tokens)")
        if pos < 0:
            raise ValueError(f"position must be >= 0, got {pos}")
        if isinstance(seq_ids, int):
            seq_ids = (seq_ids,)
        if not 1 <= len(seq_ids) <= self.n_seq_max:
            raise ValueError(f"a token needs 1..{self.n_seq_max} sequence ids, got {len(seq_ids)}")
        for s in seq_ids:
            if s < 0:
                raise ValueError(f"sequence id must be >= 0, got {s}")
            self._batch.seq_id[i][j] = s
            j += 1
        self._batch.token[i] = token
        self._batch.pos[i] = pos
        self._batch.n_seq_id[i] = j
        self._batch.logits[i] = logits
        self._batch.n_tokens = i + 1

    def set_logits(self, int32_t i, bint value=True):
        self._check()
        if not 0 <= i < self._batch.n_tokens:
            raise IndexError(f"batch index {i} out of range ({self._batch.n_tokens} tokens)")
        self._batch.logits[i] = value

    def tokens(self):
        self._check()
        return [self._batch.token[i] for i in range(self._batch.n_tokens)]
