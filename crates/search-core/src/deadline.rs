//! Deadlines that really stop a query: a [`Weight`] wrapper whose scorers check the clock while
//! Tantivy iterates them, and stop the segment (they report [`TERMINATED`]) once it has passed.
//!
//! A timeout around a blocking call (`tokio::time::timeout`) only stops *waiting*: the search
//! thread goes on burning CPU until the query finishes. Tantivy's collectors cannot abort by
//! themselves (`SegmentCollector::collect` returns nothing), but every collection loop is driven
//! by a scorer's `advance()`/`fill_buffer()` or by `Weight::for_each_pruning`, so that is where
//! the clock is checked:
//!
//! * **Scorer loops** (counting, top-k together with a count, `Count` alone): [`DeadlineScorer`]
//!   counts the documents it yields and reads the clock only every `stride` of them. The stride
//!   adapts so that a clock read happens roughly every 50–200 µs of work, whatever one
//!   `advance()` costs (a plain term is nanoseconds, a 1,000-term union much more): the check
//!   costs nothing measurable, and the overshoot past the deadline stays well under a millisecond.
//!   Once past the deadline the scorer answers [`TERMINATED`], so Tantivy's loop ends normally and
//!   the collector keeps what it gathered: the hits and the count *so far*.
//! * **Block-WAND top-k** (`count: false`): Tantivy's specialised pruning loops work on the term
//!   postings directly and never call our scorer, so wrapping the scorer would mean giving up
//!   block-WAND. They do call back for every competitive document; the wrapper checks the clock
//!   there and, once past the deadline, answers a threshold of `f32::MAX`: no document can beat
//!   it, and every block-WAND variant returns at once. Between two competitive documents the
//!   clock is not read, so this path is only taken when that work is small by construction
//!   (see [`NATIVE_PRUNING_BUDGET`]); other queries and larger segments take the scorer path.
//! * **Between segments**: a weight asked for the next segment's scorer after the deadline
//!   answers an empty one.
//!
//! Nothing runs in the background: when the search call returns, the work has stopped.
//!
//! **Limits.** The clock is read between documents, so a step Tantivy takes without yielding a
//! document is not interrupted: building the weight (term statistics), building a segment's
//! scorer, and one refill of a union's 4,096-document window. Most are small; the exception is
//! `word*` prefix queries, whose scorer (Tantivy's automaton weight) gathers every document of
//! every expanded term into a bitset inside `Weight::scorer`: on a large segment with a short
//! prefix that is the whole query's work, and a deadline only stops it at the next segment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tantivy::collector::Collector;
use tantivy::query::{
    BooleanQuery, EmptyScorer, EnableScoring, Explanation, Occur, Query, Scorer, TermQuery, Weight,
};
use tantivy::{DocId, DocSet, Score, Searcher, SegmentReader, TERMINATED, Term};

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

    fn fill_buffer(&mut self, buffer: &mut [DocId; tantivy::COLLECT_BLOCK_BUFFER_LEN]) -> usize {
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

/// Most work a segment may need, in the worst case, for top-k to run Tantivy's native
/// block-WAND loop under a deadline, whose clock is read only at competitive documents.
///
/// The unit is one posting visited with one scorer to compare against: block-WAND over a union
/// may visit every posting of every term, re-sorting its term cursors at each step (document
/// frequencies summed, times the number of terms); over a conjunction it is driven by the rarest
/// term, checking the others (smallest document frequency times the number of terms). At a few
/// nanoseconds per unit in release builds this bounds the unchecked work to about 10 ms per
/// segment. Costlier segments take the scorer path: exhaustive, but checked. (Measured in a
/// debug build: Tantivy's block-WAND over a union of 1,000 common terms in 20,000 documents ran
/// 25-45 s; the checked exhaustive path answers the same top 10 in 0.1-0.15 s.)
const NATIVE_PRUNING_BUDGET: u64 = 1 << 22;

/// What a query's weight does natively, which decides how the deadline can be enforced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shape {
    /// A single term: its weight counts from the term dictionary (no scan) when nothing is
    /// deleted.
    single_term: bool,
    /// The terms, when the query is one of the shapes Tantivy runs with its own block-WAND
    /// loops (a term; a union or a conjunction of terms). Any other shape falls back to
    /// Tantivy's generic loop over a scorer, which might as well be ours.
    pruning_terms: Option<Vec<Term>>,
    /// The terms are a conjunction (all required), not a union.
    conjunction: bool,
}

impl Shape {
    pub(crate) fn of(query: &dyn Query) -> Shape {
        if let Some(t) = query.downcast_ref::<TermQuery>() {
            return Shape {
                single_term: true,
                pruning_terms: Some(vec![t.term().clone()]),
                conjunction: false,
            };
        }
        let mut shape = Shape {
            single_term: false,
            pruning_terms: None,
            conjunction: false,
        };
        if let Some(b) = query.downcast_ref::<BooleanQuery>() {
            let clauses = b.clauses();
            let union = clauses.iter().all(|(o, _)| *o == Occur::Should);
            let conjunction = clauses.iter().all(|(o, _)| *o == Occur::Must);
            if clauses.len() >= 2
                && (union || conjunction)
                && b.get_minimum_number_should_match() <= 1
            {
                shape.pruning_terms = clauses
                    .iter()
                    .map(|(_, q)| q.downcast_ref::<TermQuery>().map(|t| t.term().clone()))
                    .collect();
                shape.conjunction = conjunction;
            }
        }
        shape
    }

    /// Whether top-k on this segment may run Tantivy's block-WAND loop unchecked between
    /// competitive documents: a native shape, and little enough work in the worst case.
    fn native_pruning(&self, reader: &SegmentReader) -> tantivy::Result<bool> {
        let Some(terms) = &self.pruning_terms else {
            return Ok(false);
        };
        let (mut sum, mut min) = (0u64, u64::MAX);
        for term in terms {
            let df = u64::from(reader.inverted_index(term.field())?.doc_freq(term)?);
            sum += df;
            min = min.min(df);
        }
        let postings = if self.conjunction { min } else { sum };
        Ok(postings.saturating_mul(terms.len() as u64) <= NATIVE_PRUNING_BUDGET)
    }
}

/// A weight whose scorers stop at the deadline (see the module documentation).
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
        if self.shape.single_term && reader.alive_bitset().is_none() {
            // The document frequency, straight from the term dictionary.
            return self.inner.count(reader);
        }
        let mut scorer = self.scorer(reader, 1.0)?;
        Ok(match reader.alive_bitset() {
            Some(alive) => scorer.count(alive),
            None => scorer.count_including_deleted(),
        })
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
        if self.shape.native_pruning(reader)? {
            // Competitive documents are rare once the top-k fills, so reading the clock at
            // each one costs nothing; past the deadline, an unbeatable threshold ends the loop.
            let deadline = &self.deadline;
            return self
                .inner
                .for_each_pruning(threshold, reader, &mut |doc, score| {
                    if deadline.check() {
                        return Score::MAX;
                    }
                    callback(doc, score)
                });
        }
        // Tantivy's generic pruning loop, over the deadline-aware scorer.
        let mut scorer = self.scorer(reader, 1.0)?;
        let mut threshold = threshold;
        let mut doc = scorer.doc();
        while doc != TERMINATED {
            let score = scorer.score();
            if score > threshold {
                threshold = callback(doc, score);
            }
            doc = scorer.advance();
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
    use tantivy::query::{AllQuery, BoostQuery, PhraseQuery};
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
    fn only_shapes_tantivy_prunes_natively_may_skip_the_scorer_path() {
        let single = Shape::of(term_query("a").as_ref());
        assert!(single.single_term);
        assert_eq!(single.pruning_terms, Some(vec![term("a")]));

        let union = BooleanQuery::union(vec![term_query("a"), term_query("b")]);
        let shape = Shape::of(&union);
        assert!(!shape.single_term && !shape.conjunction);
        assert_eq!(shape.pruning_terms, Some(vec![term("a"), term("b")]));

        let conjunction = BooleanQuery::intersection(vec![term_query("a"), term_query("b")]);
        assert!(Shape::of(&conjunction).conjunction);
        assert!(Shape::of(&conjunction).pruning_terms.is_some());

        // Tantivy runs these with its generic loop over a scorer: ours must be that scorer.
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
        let others: [&dyn Query; 7] = [
            &mixed,
            &negated,
            &nested,
            &phrase,
            &boosted,
            &at_least_two,
            &AllQuery,
        ];
        for q in others {
            assert_eq!(Shape::of(q).pruning_terms, None, "{q:?}");
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
