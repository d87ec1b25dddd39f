import assert from 'node:assert/strict';
import { SWAP_MAX_LENGTH, SWAP_MIN_LENGTH, searchTerms, swapVariants } from '../messenger/db/search';

describe('searchTerms: what a phrase asks for', () => {
  it('words: letters and digits, lowercased, each once, in order; the phrase trimmed', () => {
    assert.deepEqual(searchTerms('  Hello, hello WORLD 42x! '), { phrase: 'Hello, hello WORLD 42x!', words: ['hello', 'world', '42x'], symbols: [] });
    assert.deepEqual(searchTerms('Привет, МИР'), { phrase: 'Привет, МИР', words: ['привет', 'мир'], symbols: [] });
  });

  it('a combining mark stays inside its word', () => {
    assert.deepEqual(searchTerms('cafe\u0301 ok').words, ['cafe\u0301', 'ok']);
  });

  it('symbol runs keep their skin tones, variation selectors and joiners, each run once', () => {
    const family = '👩\u200d👩\u200d👧';
    const t = searchTerms(`hi 👋🏽👋🏽 ❤️ ${family} ❤️ 1+1=2`);
    assert.deepEqual(t.words, ['hi', '1', '2']);
    assert.deepEqual(t.symbols, ['👋🏽👋🏽', '❤️', family, '+', '=']);
  });

  it('a phrase of punctuation only asks for its whitespace-separated pieces', () => {
    assert.deepEqual(searchTerms(' ?!  ... ?! '), { phrase: '?!  ... ?!', words: [], symbols: ['?!', '...'] });
  });

  it('symbols with punctuation and no words: the symbol runs alone, not the whitespace-separated pieces', () => {
    assert.deepEqual(searchTerms(' 👋 ?! '), { phrase: '👋 ?!', words: [], symbols: ['👋'] });
  });
});

describe('swapVariants: a word with two neighbouring letters swapped', () => {
  it('each swap once, never the word itself (a doubled letter swaps into the same word)', () => {
    assert.deepEqual(swapVariants('mango'), ['amngo', 'mnago', 'magno', 'manog']);
    assert.deepEqual(swapVariants('hello'), ['ehllo', 'hlelo', 'helol']);
    assert.deepEqual(swapVariants('abab'), ['baab', 'aabb', 'abba']);
    assert.deepEqual(swapVariants('aaaa'), []);
    assert.deepEqual(swapVariants('мир'), []);
    assert.deepEqual(swapVariants('мирр'), ['имрр', 'мрир']);
  });

  it(`words of ${SWAP_MIN_LENGTH} to ${SWAP_MAX_LENGTH} characters only; a combining mark stays with its letter`, () => {
    assert.deepEqual(swapVariants('cat'), []);
    assert.equal(swapVariants('abcd').length, 3);
    assert.equal(swapVariants('abcdefghijkl').length, 11);
    assert.deepEqual(swapVariants('abcdefghijklm'), []);
    assert.deepEqual(swapVariants('cafe\u0301'), ['acfe\u0301', 'cfae\u0301', 'caef\u0301']);
  });
});
