//! Deadlines that really stop a query: a [`Weight`] wrapper that reads the clock while Tantivy
//! collects a segment and ends the segment's loop once the deadline has passed.
//!
//! A timeout around a blocking call (`tokio::time::timeout`) only stops *waiting*: the search
//! thread goes on burning CPU until the query finishes. Tantivy's collectors cannot abort by
//! themselves (`SegmentCollector::collect` returns nothing), but every collection loop runs
//! inside one of the weight's methods (`for_each`, `for_each_no_score`, `for_each_pruning`,
//! `count`), or over its `scorer`, so that is where [`DeadlineWeight`] takes over:
//!
//! * **Checked loops.** It drives the inner scorer itself and counts the documents it yields,
//!   reading the clock only every `stride` of them. The stride adapts so that a clock read
//!   happens roughly every 50-200 µs of work, whatever a document costs (nanoseconds for a term,
//!   much more for a long phrase): the check costs nothing measurable and the overshoot past the
//!   deadline stays well under a millisecond. Past the deadline the loop ends, and the collector
//!   keeps what it gathered: the hits and the count *so far*. [`DeadlineScorer`] does the same
//!   for callers that iterate `Weight::scorer` themselves (it then reports [`TERMINATED`]).
//! * **Native loops under a work budget.** For the shapes Tantivy specialises (a term, a union
//!   or a conjunction of terms, all documents) the checked loop would cost the specialisation
//!   (static dispatch, term-dictionary counts, block-WAND), which for cheap queries is most of
//!   the time. Those run natively when a segment's worst-case work, estimated from document
//!   frequencies, is within [`NATIVE_BUDGET`] (a few milliseconds); beyond it, checked. Native
//!   block-WAND top-k is still watched: it calls back for every competitive document, the
//!   wrapper reads the clock there and, past the deadline, answers a threshold of `f32::MAX`,
//!   which no document can beat, so every block-WAND variant returns at once.
//! * **Between segments**, the clock is read before each one starts.
//!
//! Nothing runs in the background: when the search call returns, the work has stopped.
//!
//! **Limits.** The clock is read between documents, so a step Tantivy takes without yielding a
//! document is not interrupted: building the weight (term statistics), building a segment's
//! scorer, one refill of a union's 4,096-document window, and native loops within the budget.
//! Most are small; the exception is `word*` prefix queries, whose scorer (Tantivy's automaton
//! weight) gathers every document of every expanded term into a bitset inside
//! `Weight::scorer`: on a large segment with a short prefix that is the whole query's work, and
//! a deadline only stops it at the next segment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tantivy::collector::Collector;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyScorer, EnableScoring, Explanation, Occur, Query, Scorer,
    TermQuery, Weight,
};
use tantivy::{
    COLLECT_BLOCK_BUFFER_LEN, DocId, DocSet, Score, Searcher, SegmentReader, TERMINATED, Term,
};

/// The end of a search's time budget, shared by every scorer of one search.
#[derive(Debug)]
pub(crate) struct Deadline {
    at: Instant,
    expired: AtomicBool,
}

impl Deadline {
    pub(crate) fn new(at: Instant) -> Arc<Deadline> {
        Arc::new(Deadline {
            at,
            expired: AtomicBool::new(false),
        })
    }

    /// Reads the clock: true (and remembered) once the deadline has passed.
    pub(crate) fn check(&self) -> bool {
        if self.expired.load(Ordering::Relaxed) {
            return true;
        }
        let passed = Instant::now() >= self.at;
        if passed {
            self.expired.store(true, Ordering::Relaxed);
        }
        passed
    }

    /// Whether some check saw the deadline pass (work was cut short), without reading the clock.
    pub(crate) fn expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }
}

/// Smallest and largest number of documents between two clock reads.
const MIN_STRIDE: u32 = 1;
const MAX_STRIDE: u32 = 1 << 16;
/// The stride doubles when clock reads come closer than this...
const CHECK_TOO_OFTEN: Duration = Duration::from_micros(50);
/// ...and halves when they come further apart than this.
const CHECK_TOO_RARELY: Duration = Duration::from_micros(200);

/// A countdown of documents before the next clock read, with an adaptive stride.
struct Ticker {
    deadline: Arc<Deadline>,
    countdown: u32,
    stride: u32,
    last: Instant,
}

impl Ticker {
    fn new(deadline: Arc<Deadline>) -> Ticker {
        Ticker {
            deadline,
            countdown: 64,
            stride: 64,
            last: Instant::now(),
        }
    }

    /// Accounts for `work` documents; true when the deadline has passed.
    #[inline]
    fn tick(&mut self, work: u32) -> bool {
        if self.countdown > work {
            self.countdown -= work;
            return false;
        }
        self.read_clock()
    }

    #[cold]
    fn read_clock(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline.at {
            self.deadline.expired.store(true, Ordering::Relaxed);
            return true;
        }
        // Reading the clock costs ~20 ns: aim for one read every 50-200 µs of real work.
        let since = now.saturating_duration_since(self.last);
        if since < CHECK_TOO_OFTEN {
            self.stride = (self.stride * 2).min(MAX_STRIDE);
        } else if since > CHECK_TOO_RARELY {
            self.stride = (self.stride / 2).max(MIN_STRIDE);
        }
        self.last = now;
        self.countdown = self.stride;
        false
    }
}

/// A scorer that stops (reports [`TERMINATED`]) once the deadline has passed.
pub(crate) struct DeadlineScorer {
    inner: Box<dyn Scorer>,
    ticker: Ticker,
    stopped: bool,
}

impl DeadlineScorer {
    fn new(inner: Box<dyn Scorer>, deadline: Arc<Deadline>) -> DeadlineScorer {
        DeadlineScorer {
            inner,
            ticker: Ticker::new(deadline),
            stopped: false,
        }
    }

    /// Accounts for `work` documents; true (and stopped for good) past the deadline.
    #[inline]
    fn must_stop(&mut self, work: u32) -> bool {
        if !self.stopped && self.ticker.tick(work) {
            self.stopped = true;
        }
        self.stopped
    }
}

impl DocSet for DeadlineScorer {
    fn advance(&mut self) -> DocId {
        if self.must_stop(1) {
            return TERMINATED;
        }
        self.inner.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.must_stop(1) {
            return TERMINATED;
        }
        self.inner.seek(target)
    }

    fn fill_buffer(&mut self, buffer: &mut [DocId; COLLECT_BLOCK_BUFFER_LEN]) -> usize {
        if self.must_stop(buffer.len() as u32) {
            return 0;
        }
        self.inner.fill_buffer(buffer)
    }

    fn doc(&self) -> DocId {
        if self.stopped {
            TERMINATED
        } else {
            self.inner.doc()
        }
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }

    fn cost(&self) -> u64 {
        self.inner.cost()
    }
}

impl Scorer for DeadlineScorer {
    fn score(&mut self) -> Score {
        self.inner.score()
    }
}

/// Most work a segment may need, in the worst case, to run one of Tantivy's native loops under
/// a deadline, which read no clock (see [`Shape::native_cost`]).
///
/// The unit is one posting visited (for block-WAND over a union: times the number of terms, as
/// it re-sorts its term cursors at each step). At a few nanoseconds per unit in release builds
/// this bounds the unchecked work to about 10 ms per segment; costlier segments take the
/// checked loop. (Measured in a debug build: Tantivy's block-WAND over a union of 1,000 common
/// terms in 20,000 documents ran 25-45 s; the checked exhaustive loop answers the same top 10
/// in 0.1-0.15 s.)
const NATIVE_BUDGET: u64 = 1 << 22;

/// What Tantivy does natively with a query, which decides whether the deadline can let it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Every document (`AllQuery`): a trivial scorer.
    All,
    /// One term: one posting list; counted from the term dictionary when nothing is deleted.
    Term,
    /// A union of terms: a bucketed union, block-WAND for top-k.
    Union,
    /// A conjunction of terms: leapfrog intersection, block-WAND for top-k.
    Conjunction,
    /// Anything else: Tantivy runs its generic loop over the query's scorer, so the checked
    /// loop (the same loop, reading the clock) costs nothing extra.
    Other,
}

/// A query's [`Kind`] and, for term shapes, its terms.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shape {
    kind: Kind,
    terms: Vec<Term>,
}

impl Shape {
    pub(crate) fn of(query: &dyn Query) -> Shape {
        let other = Shape {
            kind: Kind::Other,
            terms: Vec::new(),
        };
        if query.is::<AllQuery>() {
            return Shape {
                kind: Kind::All,
                terms: Vec::new(),
            };
        }
        if let Some(t) = query.downcast_ref::<TermQuery>() {
            return Shape {
                kind: Kind::Term,
                terms: vec![t.term().clone()],
            };
        }
        let Some(b) = query.downcast_ref::<BooleanQuery>() else {
            return other;
        };
        let clauses = b.clauses();
        let kind = if clauses.iter().all(|(o, _)| *o == Occur::Should) {
            Kind::Union
        } else if clauses.iter().all(|(o, _)| *o == Occur::Must) {
            Kind::Conjunction
        } else {
            return other;
        };
        if clauses.len() < 2 || b.get_minimum_number_should_match() > 1 {
            return other;
        }
        let terms: Option<Vec<Term>> = clauses
            .iter()
            .map(|(_, q)| q.downcast_ref::<TermQuery>().map(|t| t.term().clone()))
            .collect();
        match terms {
            Some(terms) => Shape { kind, terms },
            None => other,
        }
    }

    /// Worst-case work of Tantivy's native loop on this segment, in postings visited (`None`:
    /// no native loop worth keeping). Exhaustive loops visit every posting of a union, and are
    /// driven by the rarest term of a conjunction (each of its documents sought in the others);
    /// block-WAND over a union (`pruning`) may in addition compare against every term at each
    /// step.
    fn native_cost(&self, reader: &SegmentReader, pruning: bool) -> tantivy::Result<Option<u64>> {
        if self.kind == Kind::All {
            return Ok(Some(u64::from(reader.max_doc())));
        }
        if self.kind == Kind::Other {
            return Ok(None);
        }
        let (mut sum, mut min) = (0u64, u64::MAX);
        for term in &self.terms {
            let df = u64::from(reader.inverted_index(term.field())?.doc_freq(term)?);
            sum += df;
            min = min.min(df);
        }
        let n = self.terms.len() as u64;
        Ok(Some(match self.kind {
            Kind::Conjunction => min.saturating_mul(n),
            Kind::Union if pruning => sum.saturating_mul(n),
            _ => sum,
        }))
    }

    /// Whether the native loop may run on this segment without reading the clock.
    fn native(&self, reader: &SegmentReader, pruning: bool) -> tantivy::Result<bool> {
        Ok(self
            .native_cost(reader, pruning)?
            .is_some_and(|cost| cost <= NATIVE_BUDGET))
    }
}

/// A weight whose collection loops stop at the deadline (see the module documentation).
pub(crate) struct DeadlineWeight {
    inner: Box<dyn Weight>,
    deadline: Arc<Deadline>,
    shape: Shape,
}

impl Weight for DeadlineWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        if self.deadline.check() {
            return Ok(Box::new(EmptyScorer));
        }
        let inner = self.inner.scorer(reader, boost)?;
        Ok(Box::new(DeadlineScorer::new(inner, self.deadline.clone())))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.inner.explain(reader, doc)
    }

    fn count(&self, reader: &SegmentReader) -> tantivy::Result<u32> {
        if self.deadline.check() {
            return Ok(0);
        }
        if self.shape.native(reader, false)? {
            return self.inner.count(reader);
        }
        let mut count = 0;
        let alive = reader.alive_bitset();
        self.checked_blocks(reader, &mut |docs| {
            count += match alive {
                Some(alive) => docs.iter().filter(|&&d| alive.is_alive(d)).count() as u32,
                None => docs.len() as u32,
            };
        })?;
        Ok(count)
    }

    fn for_each(
        &self,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(DocId, Score),
    ) -> tantivy::Result<()> {
        if self.deadline.check() {
            return Ok(());
        }
        if self.shape.native(reader, false)? {
            return self.inner.for_each(reader, callback);
        }
        let mut scorer = self.inner.scorer(reader, 1.0)?;
        let mut ticker = Ticker::new(self.deadline.clone());
        let mut doc = scorer.doc();
        while doc != TERMINATED && !ticker.tick(1) {
            callback(doc, scorer.score());
            doc = scorer.advance();
        }
        Ok(())
    }

    fn for_each_no_score(
        &self,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(&[DocId]),
    ) -> tantivy::Result<()> {
        if self.deadline.check() {
            return Ok(());
        }
        if self.shape.native(reader, false)? {
            return self.inner.for_each_no_score(reader, callback);
        }
        self.checked_blocks(reader, callback)
    }

    fn for_each_pruning(
        &self,
        threshold: Score,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(DocId, Score) -> Score,
    ) -> tantivy::Result<()> {
        if self.deadline.check() {
            return Ok(());
        }
        if self.shape.native(reader, true)? {
            // Block-WAND calls back for each competitive document: the clock is read there
            // (every stride of them); past the deadline, an unbeatable threshold ends the loop.
            let mut ticker = Ticker::new(self.deadline.clone());
            return self
                .inner
                .for_each_pruning(threshold, reader, &mut |doc, score| {
                    if ticker.tick(1) {
                        return Score::MAX;
                    }
                    callback(doc, score)
                });
        }
        // Tantivy's generic pruning loop, reading the clock.
        let mut scorer = self.inner.scorer(reader, 1.0)?;
        let mut ticker = Ticker::new(self.deadline.clone());
        let mut threshold = threshold;
        let mut doc = scorer.doc();
        while doc != TERMINATED && !ticker.tick(1) {
            let score = scorer.score();
            if score > threshold {
                threshold = callback(doc, score);
            }
            doc = scorer.advance();
        }
        Ok(())
    }
}

impl DeadlineWeight {
    /// Hands the segment's documents to `callback` in blocks, reading the clock between them.
    fn checked_blocks(
        &self,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(&[DocId]),
    ) -> tantivy::Result<()> {
        let mut scorer = self.inner.scorer(reader, 1.0)?;
        let mut ticker = Ticker::new(self.deadline.clone());
        let mut buffer = [0; COLLECT_BLOCK_BUFFER_LEN];
        while !ticker.tick(buffer.len() as u32) {
            let n = scorer.fill_buffer(&mut buffer);
            callback(&buffer[..n]);
            if n < buffer.len() {
                break;
            }
        }
        Ok(())
    }
}

/// Runs `collector` over every segment like [`Searcher::search`] (which it is, without a
/// deadline), stopping at `deadline`.
///
/// The collector keeps whatever it gathered before the deadline; [`Deadline::expired`] tells
/// whether the work was cut short.
pub(crate) fn search<C: Collector>(
    searcher: &Searcher,
    query: &dyn Query,
    collector: &C,
    deadline: Option<&Arc<Deadline>>,
) -> tantivy::Result<C::Fruit> {
    let Some(deadline) = deadline else {
        return searcher.search(query, collector);
    };
    let scoring = if collector.requires_scoring() {
        EnableScoring::enabled_from_searcher(searcher)
    } else {
        EnableScoring::disabled_from_searcher(searcher)
    };
    let weight = DeadlineWeight {
        inner: query.weight(scoring)?,
        deadline: deadline.clone(),
        shape: Shape::of(query),
    };
    collector.check_schema(searcher.schema())?;
    let mut fruits = Vec::with_capacity(searcher.segment_readers().len());
    for (ord, reader) in searcher.segment_readers().iter().enumerate() {
        if deadline.check() {
            break;
        }
        fruits.push(collector.collect_segment(&weight, ord as u32, reader)?);
    }
    collector.merge_fruits(fruits)
}

#[cfg(test)]
mod tests {
    use tantivy::query::{BoostQuery, PhraseQuery};
    use tantivy::schema::{IndexRecordOption, Schema, TEXT};

    use super::*;

    fn term(word: &str) -> Term {
        let mut schema = Schema::builder();
        let field = schema.add_text_field("t", TEXT);
        Term::from_field_text(field, word)
    }

    fn term_query(word: &str) -> Box<dyn Query> {
        Box::new(TermQuery::new(term(word), IndexRecordOption::WithFreqs))
    }

    #[test]
    fn only_shapes_tantivy_specialises_may_run_natively() {
        let single = Shape::of(term_query("a").as_ref());
        assert_eq!(single.kind, Kind::Term);
        assert_eq!(single.terms, vec![term("a")]);

        let union = BooleanQuery::union(vec![term_query("a"), term_query("b")]);
        let shape = Shape::of(&union);
        assert_eq!(shape.kind, Kind::Union);
        assert_eq!(shape.terms, vec![term("a"), term("b")]);

        let conjunction = BooleanQuery::intersection(vec![term_query("a"), term_query("b")]);
        assert_eq!(Shape::of(&conjunction).kind, Kind::Conjunction);
        assert_eq!(Shape::of(&AllQuery).kind, Kind::All);

        // Tantivy runs these with its generic loop over a scorer: the checked loop is that loop.
        let mixed = BooleanQuery::new(vec![
            (Occur::Must, term_query("a")),
            (Occur::Should, term_query("b")),
        ]);
        let negated = BooleanQuery::new(vec![
            (Occur::Should, term_query("a")),
            (Occur::MustNot, term_query("b")),
        ]);
        let nested = BooleanQuery::union(vec![term_query("a"), Box::new(union)]);
        let phrase = PhraseQuery::new(vec![term("a"), term("b")]);
        let boosted = BoostQuery::new(term_query("a"), 2.0);
        let at_least_two = BooleanQuery::with_minimum_required_clauses(
            vec![
                (Occur::Should, term_query("a")),
                (Occur::Should, term_query("b")),
                (Occur::Should, term_query("c")),
            ],
            2,
        );
        let others: [&dyn Query; 6] = [&mixed, &negated, &nested, &phrase, &boosted, &at_least_two];
        for q in others {
            assert_eq!(Shape::of(q).kind, Kind::Other, "{q:?}");
        }
    }

    #[test]
    fn the_stride_adapts_to_the_cost_of_a_document() {
        let deadline = Deadline::new(Instant::now() + Duration::from_secs(600));
        let mut ticker = Ticker::new(deadline.clone());
        // Cheap documents: clock reads come too often, the stride grows.
        for _ in 0..10_000_000 {
            assert!(!ticker.tick(1), "the deadline is far away");
            if ticker.stride > 64 {
                break;
            }
        }
        assert!(ticker.stride > 64, "{}", ticker.stride);
        // Costly documents: the stride shrinks until every document reads the clock.
        while ticker.stride > MIN_STRIDE {
            std::thread::sleep(CHECK_TOO_RARELY * 2);
            let _ = ticker.read_clock();
        }
        assert!(!deadline.expired());
        // Past the deadline, the next read says so and the deadline remembers it.
        let past = Deadline::new(Instant::now());
        let mut ticker = Ticker::new(past.clone());
        assert!(ticker.read_clock());
        assert!(past.expired() && past.check());
    }
}
