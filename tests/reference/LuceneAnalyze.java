/*
 * Reference driver for retrievo's text-analysis tests.
 *
 * Reads one JSON string literal per input line from stdin and writes one JSON
 * array per output line to stdout (both pure ASCII, non-ASCII escaped as \\uXXXX),
 * so that arbitrary text -- including tabs, newlines and lone surrogates --
 * survives the round trip.
 *
 * Usage: java -cp lucene-core.jar:lucene-analyzers-common.jar:. LuceneAnalyze MODE
 *
 * MODE:
 *   english          EnglishAnalyzer (default constructor): ["term", ...]
 *   english-offsets  EnglishAnalyzer: [["term", start, end], ...] (UTF-16 offsets)
 *   standard         StandardAnalyzer (default constructor): ["term", ...]
 *   tokens [MAXLEN]  StandardTokenizer only: [["text", start, end, "<TYPE>"], ...],
 *                    optionally with setMaxTokenLength(MAXLEN)
 *   porter           each line is one term; PorterStemFilter output: ["stem"]
 *   tables           ignores stdin; prints one JSON object describing the
 *                    character classes of StandardTokenizerImpl (see below)
 *                    and Character.toLowerCase exceptions.
 */

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.StringReader;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.apache.lucene.analysis.Analyzer;
import org.apache.lucene.analysis.CharArraySet;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.Tokenizer;
import org.apache.lucene.analysis.core.KeywordTokenizer;
import org.apache.lucene.analysis.en.EnglishAnalyzer;
import org.apache.lucene.analysis.en.PorterStemFilter;
import org.apache.lucene.analysis.standard.StandardAnalyzer;
import org.apache.lucene.analysis.standard.StandardTokenizer;
import org.apache.lucene.analysis.standard.StandardTokenizerImpl;
import org.apache.lucene.analysis.tokenattributes.CharTermAttribute;
import org.apache.lucene.analysis.tokenattributes.OffsetAttribute;
import org.apache.lucene.analysis.tokenattributes.TypeAttribute;

public class LuceneAnalyze {

  // ---------------------------------------------------------------- JSON I/O

  static String decodeJsonString(String line) {
    String s = line.trim();
    if (s.length() < 2 || s.charAt(0) != '"' || s.charAt(s.length() - 1) != '"') {
      throw new IllegalArgumentException("input line is not a JSON string: " + line);
    }
    StringBuilder out = new StringBuilder(s.length());
    for (int i = 1; i < s.length() - 1; i++) {
      char c = s.charAt(i);
      if (c != '\\') {
        out.append(c);
        continue;
      }
      char e = s.charAt(++i);
      switch (e) {
        case '"': out.append('"'); break;
        case '\\': out.append('\\'); break;
        case '/': out.append('/'); break;
        case 'b': out.append('\b'); break;
        case 'f': out.append('\f'); break;
        case 'n': out.append('\n'); break;
        case 'r': out.append('\r'); break;
        case 't': out.append('\t'); break;
        case 'u':
          out.append((char) Integer.parseInt(s.substring(i + 1, i + 5), 16));
          i += 4;
          break;
        default:
          throw new IllegalArgumentException("bad escape \\" + e + " in: " + line);
      }
    }
    return out.toString();
  }

  static void appendJsonString(StringBuilder sb, CharSequence s) {
    sb.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c == '"' || c == '\\') {
        sb.append('\\').append(c);
      } else if (c >= 0x20 && c < 0x7f) {
        sb.append(c);
      } else {
        sb.append(String.format("\\u%04x", (int) c));
      }
    }
    sb.append('"');
  }

  // ------------------------------------------------------------- analyzers

  static final class PorterOnly extends Analyzer {
    @Override
    protected TokenStreamComponents createComponents(String fieldName) {
      Tokenizer src = new KeywordTokenizer();
      return new TokenStreamComponents(src, new PorterStemFilter(src));
    }
  }

  static String analyze(Analyzer analyzer, String text, boolean offsets) throws IOException {
    StringBuilder sb = new StringBuilder();
    sb.append('[');
    try (TokenStream ts = analyzer.tokenStream("f", text)) {
      CharTermAttribute term = ts.addAttribute(CharTermAttribute.class);
      OffsetAttribute off = ts.addAttribute(OffsetAttribute.class);
      ts.reset();
      boolean first = true;
      while (ts.incrementToken()) {
        if (!first) sb.append(',');
        first = false;
        if (offsets) {
          sb.append('[');
          appendJsonString(sb, term);
          sb.append(',').append(off.startOffset()).append(',').append(off.endOffset()).append(']');
        } else {
          appendJsonString(sb, term);
        }
      }
      ts.end();
    }
    sb.append(']');
    return sb.toString();
  }

  // ------------------------------------------------------- raw tokenizer use

  static final StandardTokenizer TOKENIZER = new StandardTokenizer();
  static final CharTermAttribute T_TERM = TOKENIZER.addAttribute(CharTermAttribute.class);
  static final OffsetAttribute T_OFF = TOKENIZER.addAttribute(OffsetAttribute.class);
  static final TypeAttribute T_TYPE = TOKENIZER.addAttribute(TypeAttribute.class);

  /** Tokens as [text, start, end, type] quadruples. */
  static List<Object[]> tokenize(String text) throws IOException {
    List<Object[]> out = new ArrayList<>();
    TOKENIZER.setReader(new StringReader(text));
    TOKENIZER.reset();
    while (TOKENIZER.incrementToken()) {
      out.add(new Object[] {T_TERM.toString(), T_OFF.startOffset(), T_OFF.endOffset(), T_TYPE.type()});
    }
    TOKENIZER.end();
    TOKENIZER.close();
    return out;
  }

  static String tokensJson(String text) throws IOException {
    StringBuilder sb = new StringBuilder("[");
    boolean first = true;
    for (Object[] t : tokenize(text)) {
      if (!first) sb.append(',');
      first = false;
      sb.append('[');
      appendJsonString(sb, (String) t[0]);
      sb.append(',').append(t[1]).append(',').append(t[2]).append(',');
      appendJsonString(sb, (String) t[3]);
      sb.append(']');
    }
    return sb.append(']').toString();
  }

  // ------------------------------------------------ character-class tables

  /** Token texts of s, in order. */
  static List<String> T(String s) throws IOException {
    List<String> out = new ArrayList<>();
    for (Object[] t : tokenize(s)) out.add((String) t[0]);
    return out;
  }

  static boolean is(List<String> got, String... want) {
    if (got.size() != want.length) return false;
    for (int i = 0; i < want.length; i++) if (!got.get(i).equals(want[i])) return false;
    return true;
  }

  static String cp(int c) { return new String(Character.toChars(c)); }

  static final String[] SET_NAMES = {
    "X", "ZWJ", "A", "H", "N", "K", "E", "ML", "MN", "SQ", "DQ", "RI", "SEA", "S1", "EM", "EMB", "EC"
  };

  /**
   * Behavioural membership of code point c in the character sets used by
   * retrievo's regular-expression emulation of StandardTokenizerImpl. Every
   * set is decided by how the real tokenizer treats c in small contexts:
   *   X   [\p{WB:Format}\p{WB:Extend}\p{WB:ZWJ}]  (attaches to the previous unit)
   *   ZWJ \p{WB:ZWJ}                               (may prefix an emoji sequence)
   *   A   [\p{WB:ALetter}\p{WB:Hebrew_Letter}]     H  \p{WB:Hebrew_Letter}
   *   N   numeric                                  K  \p{WB:Katakana}
   *   E   \p{WB:ExtendNumLet}
   *   ML  MidLetter|MidNumLet|Single_Quote         MN MidNum|MidNumLet|Single_Quote
   *   SQ  \p{WB:Single_Quote}                      DQ \p{WB:Double_Quote}
   *   RI  \p{WB:Regional_Indicator}                SEA \p{LB:Complex_Context}
   *   S1  Han or Hiragana (single-character tokens)
   *   EM  Emoji_Modifier   EMB Emoji_Modifier_Base   EC emoji character
   */
  static boolean[] classify(int c) throws IOException {
    String C = cp(c);
    List<String> alone = T(C);
    boolean tokAlone = is(alone, C);
    boolean X = is(T("a" + C + ":a"), "a" + C + ":a")
        && is(T("1" + C + ",1"), "1" + C + ",1")
        && is(T("\u30A2" + C + "\u30A2"), "\u30A2" + C + "\u30A2");
    boolean A = tokAlone && is(T("a:" + C), "a:" + C);
    boolean H = A && is(T(C + "'"), C + "'");
    boolean N = tokAlone && is(T("1," + C), "1," + C);
    boolean K = tokAlone && !X && !A && !N && is(T("\u30A2" + C), "\u30A2" + C);
    boolean E = alone.isEmpty() && is(T("a" + C), "a" + C) && is(T(C + "a"), C + "a");
    boolean ML = !X && is(T("a" + C + "a"), "a" + C + "a") && is(T("a" + C), "a");
    boolean MN = !X && is(T("1" + C + "1"), "1" + C + "1") && is(T("1" + C), "1");
    boolean SQ = !X && alone.isEmpty() && is(T("a" + C), "a") && is(T("\u05D0" + C), "\u05D0" + C);
    boolean DQ = !X && !ML && is(T("\u05D0" + C + "\u05D0"), "\u05D0" + C + "\u05D0")
        && is(T("\u05D0" + C), "\u05D0");
    boolean RI = alone.isEmpty() && is(T(C + C), C + C);
    boolean SEA = !A && !N && !K && is(T(C + "\u0E01"), C + "\u0E01");
    boolean S1 = !A && !N && !K && !SEA && is(T(C + C), C, C)
        && is(T(C + "\u0301"), C + "\u0301") && is(T(C + "\uFE0E"), C + "\uFE0E");
    boolean ZWJ = alone.isEmpty() && is(T(C + "\uD83D\uDE00"), C + "\uD83D\uDE00");
    boolean EM = !X && tokAlone && is(T("\uD83D\uDC4D" + C), "\uD83D\uDC4D" + C);
    boolean EMB = is(T(C + "\uD83C\uDFFB"), C + "\uD83C\uDFFB");
    boolean EC = !EM && tokAlone && is(T(C + "\u200D\uD83D\uDE00"), C + "\u200D\uD83D\uDE00");
    return new boolean[] {X, ZWJ, A, H, N, K, E, ML, MN, SQ, DQ, RI, SEA, S1, EM, EMB, EC};
  }

  static int[] cmap() throws Exception {
    Field f = StandardTokenizerImpl.class.getDeclaredField("ZZ_CMAP");
    f.setAccessible(true);
    char[] map = (char[]) f.get(null);
    int[] out = new int[map.length];
    for (int i = 0; i < map.length; i++) out[i] = map[i];
    return out;
  }

  static void appendRanges(StringBuilder sb, boolean[] member) {
    sb.append('[');
    boolean first = true;
    int c = 0;
    while (c < member.length) {
      if (!member[c]) { c++; continue; }
      int start = c;
      while (c < member.length && member[c]) c++;
      if (!first) sb.append(',');
      first = false;
      sb.append('[').append(start).append(',').append(c - 1).append(']');
    }
    sb.append(']');
  }

  static void appendWords(StringBuilder sb, CharArraySet set) {
    List<String> words = new ArrayList<>();
    for (Object o : set) words.add(o instanceof char[] ? new String((char[]) o) : o.toString());
    java.util.Collections.sort(words);
    sb.append('[');
    for (int i = 0; i < words.size(); i++) {
      if (i > 0) sb.append(',');
      appendJsonString(sb, words.get(i));
    }
    sb.append(']');
  }

  static String tables() throws Exception {
    int[] map = cmap();
    int n = Math.min(map.length, Character.MAX_CODE_POINT + 1);
    // one representative per jflex character class, plus a consistency check
    // on a second member of the class
    Map<Integer, boolean[]> byClass = new LinkedHashMap<>();
    Map<Integer, Integer> firstOf = new LinkedHashMap<>();
    List<String> inconsistent = new ArrayList<>();
    for (int c = 0; c < n; c++) {
      int cls = map[c];
      if (!byClass.containsKey(cls)) {
        byClass.put(cls, classify(c));
        firstOf.put(cls, c);
      }
    }
    // spot-check: every 97th code point of every class must classify the same
    for (int c = 0; c < n; c += 97) {
      boolean[] a = byClass.get(map[c]);
      boolean[] b = classify(c);
      for (int i = 0; i < a.length; i++) {
        if (a[i] != b[i]) {
          inconsistent.add(Integer.toString(c));
          break;
        }
      }
    }
    StringBuilder sb = new StringBuilder("{");
    sb.append("\"lucene_version\":");
    appendJsonString(sb, org.apache.lucene.util.Version.LATEST.toString());
    sb.append(",\"java_version\":");
    appendJsonString(sb, System.getProperty("java.version"));
    sb.append(",\"cmap_size\":").append(map.length);
    sb.append(",\"classes\":").append(byClass.size());
    sb.append(",\"inconsistent\":").append(inconsistent.toString());
    sb.append(",\"sets\":{");
    for (int s = 0; s < SET_NAMES.length; s++) {
      boolean[] member = new boolean[n];
      for (int c = 0; c < n; c++) member[c] = byClass.get(map[c])[s];
      if (s > 0) sb.append(',');
      appendJsonString(sb, SET_NAMES[s]);
      sb.append(':');
      appendRanges(sb, member);
    }
    sb.append("},\"english_stop_words\":");
    appendWords(sb, EnglishAnalyzer.ENGLISH_STOP_WORDS_SET);
    sb.append(",\"standard_stop_words\":");
    appendWords(sb, new StandardAnalyzer().getStopwordSet());
    sb.append(",\"lower\":[");
    boolean first = true;
    for (int c = 0; c <= Character.MAX_CODE_POINT; c++) {
      int l = Character.toLowerCase(c);
      if (l != c) {
        if (!first) sb.append(',');
        first = false;
        sb.append('[').append(c).append(',').append(l).append(']');
      }
    }
    sb.append("]}");
    return sb.toString();
  }

  // ------------------------------------------------------------------ main

  public static void main(String[] args) throws Exception {
    String mode = args.length > 0 ? args[0] : "english";
    BufferedWriter out = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.US_ASCII), 1 << 16);
    if (mode.equals("tables")) {
      out.write(tables());
      out.write('\n');
      out.flush();
      return;
    }
    Analyzer analyzer;
    boolean offsets = false;
    switch (mode) {
      case "english": analyzer = new EnglishAnalyzer(); break;
      case "english-offsets": analyzer = new EnglishAnalyzer(); offsets = true; break;
      case "standard": analyzer = new StandardAnalyzer(); break;
      case "porter": analyzer = new PorterOnly(); break;
      case "tokens":
        analyzer = null;
        if (args.length > 1) TOKENIZER.setMaxTokenLength(Integer.parseInt(args[1]));
        break;
      default: throw new IllegalArgumentException("unknown mode " + mode);
    }
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8), 1 << 16);
    String line;
    while ((line = in.readLine()) != null) {
      String text = decodeJsonString(line);
      out.write(analyzer == null ? tokensJson(text) : analyze(analyzer, text, offsets));
      out.write('\n');
    }
    out.flush();
  }
}
