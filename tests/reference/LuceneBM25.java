// Reference BM25 runs from real Lucene, configured as Anserini/Pyserini index BEIR "flat":
// EnglishAnalyzer, BM25Similarity(k1, b), one "contents" field (title + " " + text),
// bag-of-words queries (each distinct analysed term boosted by its count), top-k sorted by
// score then ascending document id.
//
// Input (stdin): "D\t<id>\t<base64 utf-8 contents>" lines, then "Q\t<qid>\t<base64 utf-8 text>" lines.
// Output (stdout): TREC run lines "qid Q0 docid rank score lucene".
// Usage: java LuceneBM25 K1 B K
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.*;
import org.apache.lucene.analysis.Analyzer;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.en.EnglishAnalyzer;
import org.apache.lucene.analysis.tokenattributes.CharTermAttribute;
import org.apache.lucene.document.*;
import org.apache.lucene.index.*;
import org.apache.lucene.search.*;
import org.apache.lucene.search.similarities.BM25Similarity;
import org.apache.lucene.store.ByteBuffersDirectory;
import org.apache.lucene.util.BytesRef;

public class LuceneBM25 {
  static String decode(String b64) {
    return new String(Base64.getDecoder().decode(b64), StandardCharsets.UTF_8);
  }

  public static void main(String[] args) throws Exception {
    float k1 = Float.parseFloat(args[0]);
    float b = Float.parseFloat(args[1]);
    int k = Integer.parseInt(args[2]);
    Analyzer analyzer = new EnglishAnalyzer();
    BM25Similarity sim = new BM25Similarity(k1, b);
    ByteBuffersDirectory dir = new ByteBuffersDirectory();
    IndexWriterConfig cfg = new IndexWriterConfig(analyzer);
    cfg.setSimilarity(sim);
    IndexWriter writer = new IndexWriter(dir, cfg);
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    List<String[]> queries = new ArrayList<>();
    String line;
    while ((line = in.readLine()) != null) {
      if (line.isEmpty()) continue;
      String[] parts = line.split("\t", -1);
      if (parts[0].equals("D")) {
        Document doc = new Document();
        doc.add(new StringField("id", parts[1], Field.Store.YES));
        doc.add(new SortedDocValuesField("id", new BytesRef(parts[1])));
        doc.add(new TextField("contents", decode(parts[2]), Field.Store.NO));
        writer.addDocument(doc);
      } else {
        queries.add(new String[] {parts[1], decode(parts[2])});
      }
    }
    writer.forceMerge(1);
    writer.close();
    IndexSearcher searcher = new IndexSearcher(DirectoryReader.open(dir));
    searcher.setSimilarity(sim);
    Sort sort = new Sort(SortField.FIELD_SCORE, new SortField("id", SortField.Type.STRING));
    PrintWriter out = new PrintWriter(new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8)));
    for (String[] q : queries) {
      Map<String, Integer> counts = new LinkedHashMap<>();
      try (TokenStream ts = analyzer.tokenStream("contents", q[1])) {
        CharTermAttribute term = ts.addAttribute(CharTermAttribute.class);
        ts.reset();
        while (ts.incrementToken()) counts.merge(term.toString(), 1, Integer::sum);
        ts.end();
      }
      if (counts.isEmpty()) continue;
      BooleanQuery.Builder builder = new BooleanQuery.Builder();
      for (Map.Entry<String, Integer> e : counts.entrySet()) {
        builder.add(new BoostQuery(new TermQuery(new Term("contents", e.getKey())), (float) e.getValue()),
            BooleanClause.Occur.SHOULD);
      }
      TopFieldDocs top = searcher.search(builder.build(), k, sort, true);
      int rank = 1;
      for (ScoreDoc sd : top.scoreDocs) {
        String id = searcher.doc(sd.doc).get("id");
        out.println(q[0] + " Q0 " + id + " " + rank++ + " " + sd.score + " lucene");
      }
    }
    out.flush();
  }
}
