import assert from 'node:assert/strict';
import { searchTerms } from '../messenger/db/search';

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
