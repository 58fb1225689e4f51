// Tests of the C# binding (bindings/csharp/Mirage.cs), compiled together with it by mcs and run by mono:
//
//     MirageTests.exe MODELS_DIR        every method on MODELS_DIR/fashion and MODELS_DIR/fashion-text (and a
//                                       smoke test on MODELS_DIR/emoji when it exists), determinism,
//                                       cancellation, callbacks that throw, bad input, Dispose semantics
//     MirageTests.exe --layout FILE     FILE = the output of the C program tests/layout.awk makes from
//                                       mirage.h: checks every struct size, field offset and constant
//
// Plain Main, no test framework: one line per failed check, a summary, exit status 0 only when all passed.
// run-tests.sh builds and runs both.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Threading;
using Mirage;

internal static class MirageTests
{
    private static int passed, failed;
    private static readonly string Nothing = null;
    private static readonly bool Verbose = Environment.GetEnvironmentVariable("MIRAGE_TEST_VERBOSE") == "1";

    private static void Check(bool ok, string what)
    {
        if (ok) passed++;
        else
        {
            failed++;
            Console.WriteLine("FAIL: " + what);
        }
    }

    private static void Equal<T>(T expected, T actual, string what)
    {
        bool ok = EqualityComparer<T>.Default.Equals(expected, actual);
        Check(ok, what + ": expected " + expected + ", got " + actual);
    }

    /// <summary>Runs <paramref name="action"/>, which must throw exactly <typeparamref name="T"/>.</summary>
    private static T Throws<T>(string what, Action action) where T : Exception
    {
        try
        {
            action();
        }
        catch (Exception e)
        {
            if (e.GetType() == typeof(T))
            {
                passed++;
                if (Verbose) Console.WriteLine("  ok " + what + ": " + e.GetType().Name + ": " + e.Message);
                return (T)e;
            }
            failed++;
            Console.WriteLine("FAIL: " + what + ": expected " + typeof(T).Name + ", got " + e.GetType().Name + ": " + e.Message);
            return null;
        }
        failed++;
        Console.WriteLine("FAIL: " + what + ": expected " + typeof(T).Name + ", nothing thrown");
        return null;
    }

    /// <summary>The call must throw MirageException with <paramref name="status"/> and the library's
    /// (non-empty) message, which contains <paramref name="contains"/> when given (case-insensitive).</summary>
    private static void Fails(Status status, string what, Action action, string contains = null)
    {
        var e = Throws<MirageException>(what, action);
        if (e == null) return;
        Equal(status, e.Status, what + ": status");
        Check(!string.IsNullOrEmpty(e.Detail), what + ": the library's message is empty");
        Check(e.Message.Contains(e.Detail), what + ": Message lacks the library's message");
        if (contains != null)
            Check(e.Detail.IndexOf(contains, StringComparison.OrdinalIgnoreCase) >= 0,
                what + ": message \"" + e.Detail + "\" lacks \"" + contains + "\"");
    }

    /// <summary>Runs one group of checks; an unexpected exception fails the group, the run goes on.</summary>
    private static void Test(string name, Action body)
    {
        var clock = Stopwatch.StartNew();
        int before = failed;
        try
        {
            body();
        }
        catch (Exception e)
        {
            failed++;
            Console.WriteLine("FAIL: " + name + ": unexpected " + e);
        }
        Console.WriteLine(string.Format("{0} {1} ({2} ms)", failed == before ? "ok  " : "FAIL", name, clock.ElapsedMilliseconds));
    }

    private static bool Same(Image a, Image b)
    {
        return a.Width == b.Width && a.Height == b.Height && a.Channels == b.Channels && a.Pixels.SequenceEqual(b.Pixels);
    }

    private static bool Same(Image[] a, Image[] b)
    {
        return a.Length == b.Length && a.Zip(b, (x, y) => Same(x, y)).All(s => s);
    }

    private static double MeanAbsDiff(byte[] a, byte[] b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += Math.Abs(a[i] - b[i]);
        return sum / a.Length;
    }

    private static int Main(string[] args)
    {
        if (args.Length == 2 && args[0] == "--layout") return Layout(args[1]);
        if (args.Length != 1)
        {
            Console.Error.WriteLine("usage: MirageTests.exe MODELS_DIR | --layout FILE");
            return 2;
        }
        var total = Stopwatch.StartNew();
        Run(args[0]);
        Console.WriteLine(string.Format("time: {0:F1} s", total.Elapsed.TotalSeconds));
        Console.WriteLine(string.Format("{0} passed, {1} failed", passed, failed));
        return failed == 0 ? 0 : 1;
    }

    // ---- struct layout and constants against the C compiler's view of mirage.h ----

    private static int Layout(string file)
    {
        Assembly binding = typeof(Context).Assembly;
        var fieldsSeen = new Dictionary<string, int>();
        foreach (string raw in File.ReadAllLines(file))
        {
            string line = raw.Trim();
            if (line.Length == 0) continue;
            string[] parts = line.Split(' ');
            if (parts[0] == "const")
            {
                string value = Constant(parts[1]);
                Check(value == parts[2], "constant " + parts[1] + ": C says " + parts[2] + ", the binding " + (value ?? "nothing"));
                continue;
            }
            if (parts.Length == 3 && parts[1] == "size")
            {
                Type t = binding.GetType("Mirage." + parts[0]);
                if (t == null)
                {
                    Check(false, "struct " + parts[0] + " is missing from Mirage.cs");
                    continue;
                }
                int size = Marshal.SizeOf(t);
                Console.WriteLine(parts[0] + " size " + size);
                Check(size.ToString(CultureInfo.InvariantCulture) == parts[2], "sizeof " + parts[0] + ": C " + parts[2] + ", C# " + size);
                Check(t.IsValueType && t.IsLayoutSequential, parts[0] + " is not a sequential struct");
                fieldsSeen[parts[0]] = 0;
                continue;
            }
            string[] name = parts[0].Split('.');
            Type s = binding.GetType("Mirage." + name[0]);
            FieldInfo f = s == null ? null : s.GetField(name[1], BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);
            if (f == null)
            {
                Check(false, "field " + parts[0] + " is missing from Mirage.cs");
                continue;
            }
            long offset = Marshal.OffsetOf(s, name[1]).ToInt64();
            Console.WriteLine(parts[0] + " " + offset);
            Check(offset.ToString(CultureInfo.InvariantCulture) == parts[1], "offsetof " + parts[0] + ": C " + parts[1] + ", C# " + offset);
            fieldsSeen[name[0]]++;
        }
        foreach (var kv in fieldsSeen)
        {
            int fields = binding.GetType("Mirage." + kv.Key).GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic).Length;
            Check(fields == kv.Value, kv.Key + ": C has " + kv.Value + " fields, C# " + fields);
        }
        Check(fieldsSeen.Count >= 4, "fewer than 4 structs in the C output");
        Console.WriteLine(string.Format("layout: {0} passed, {1} failed", passed, failed));
        return failed == 0 ? 0 : 1;
    }

    /// <summary>The binding's value of a MIRAGE_* constant, formatted as C's %g; null when it has none.</summary>
    private static string Constant(string c)
    {
        string[] version = Mirage.Runtime.BindingVersion.Split('.');
        switch (c)
        {
            case "MIRAGE_VERSION_MAJOR": return version[0];
            case "MIRAGE_VERSION_MINOR": return version[1];
            case "MIRAGE_VERSION_PATCH": return version[2];
            case "MIRAGE_VERSION_STRING": return Mirage.Runtime.BindingVersion;
            case "MIRAGE_MAX_BATCH": return Mirage.Runtime.MaxBatch.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_MAX_STEPS": return Mirage.Runtime.MaxSteps.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_MAX_GUIDANCE": return Mirage.Runtime.MaxGuidance.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_MAX_THREADS": return Mirage.Runtime.MaxThreads.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_GUIDANCE_DEFAULT": return Mirage.Runtime.GuidanceDefault.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_OK": return ((uint)Status.Ok).ToString(CultureInfo.InvariantCulture);
        }
        var prefixes = new[]
        {
            Tuple.Create("MIRAGE_ERR_", typeof(Status)), Tuple.Create("MIRAGE_PROVIDER_", typeof(Provider)),
            Tuple.Create("MIRAGE_LOG_", typeof(LogLevel)), Tuple.Create("MIRAGE_MODEL_", typeof(ModelKind)),
            Tuple.Create("MIRAGE_PIXEL_", typeof(PixelFormat)),
        };
        foreach (var p in prefixes)
        {
            if (!c.StartsWith(p.Item1, StringComparison.Ordinal)) continue;
            string member = c.Substring(p.Item1.Length).Replace("_", "");
            foreach (string n in Enum.GetNames(p.Item2))
                if (string.Equals(n, member, StringComparison.OrdinalIgnoreCase))
                    return Convert.ToUInt32(Enum.Parse(p.Item2, n)).ToString(CultureInfo.InvariantCulture);
        }
        return null;
    }

    // ---- the library ----

    private static void Run(string models)
    {
        string fashionDir = Path.Combine(models, "fashion");
        string textDir = Path.Combine(models, "fashion-text");
        string emojiDir = Path.Combine(models, "emoji");
        var logs = new List<string>();

        Test("runtime: version, names, Init", () =>
        {
            Equal(Mirage.Runtime.BindingVersion, Mirage.Runtime.Version, "library version");
            Equal("invalid argument", Mirage.Runtime.StatusName(Status.InvalidArgument), "StatusName");
            Equal("unknown status", Mirage.Runtime.StatusName((Status)999), "StatusName of an unknown value");
            Equal("cpu", Mirage.Runtime.ProviderName(Provider.Cpu), "ProviderName");
            Equal("unknown", Mirage.Runtime.ProviderName((Provider)99), "ProviderName of an unknown value");
            Throws<ArgumentNullException>("Init(null)", () => Mirage.Runtime.Init(null));
            Throws<ArgumentException>("Init with a NUL in OrtLibraryPath",
                () => Mirage.Runtime.Init(new RuntimeOptions { OrtLibraryPath = "/x\0y" }));
            Throws<ArgumentOutOfRangeException>("Init with IntraThreads -1",
                () => Mirage.Runtime.Init(new RuntimeOptions { IntraThreads = -1 }));
            var options = new RuntimeOptions
            {
                Provider = Provider.Cpu,
                IntraThreads = 2,
                LogLevel = LogLevel.Info,
                Log = (level, message) => { lock (logs) logs.Add(level + ": " + message); },
            };
            Mirage.Runtime.Init(options);
            Mirage.Runtime.Init(options); // the same options again: only replaces the log callback
            Fails(Status.RuntimeAlreadyInitialised, "Init with other options after the first",
                () => Mirage.Runtime.Init(new RuntimeOptions { Provider = Provider.Cpu, IntraThreads = 1 }));
        });

        Test("Context: bad model directories", () =>
        {
            Throws<ArgumentNullException>("new Context(null)", () => new Context(null));
            Fails(Status.ModelNotFound, "a directory that does not exist",
                () => new Context(Path.Combine(models, "no-such-set")), "no-such-set");
            Fails(Status.ModelNotFound, "a directory without manifest.json", () => new Context(models));
            Throws<ArgumentException>("a NUL in the path", () => new Context(fashionDir + "\0/x"));
            Throws<ArgumentException>("a lone surrogate in the path", () => new Context(fashionDir + "\ud800"));
            Fails(Status.ModelNotFound, "a non-ASCII path (UTF-8 on the way in)",
                () => new Context(Path.Combine(models, "caf\u00e9-\u2603")), "caf\u00e9-\u2603");
        });

        using (var fashion = new Context(fashionDir))
        using (var text = new Context(textDir))
        {
            RunFashion(fashion, fashionDir);
            RunText(text, fashion);
        }
        lock (logs) Check(logs.Count > 0, "the log callback received nothing at Info level");
        if (Verbose) lock (logs) foreach (var l in logs.Take(5)) Console.WriteLine("  log " + l);

        Test("Dispose", () => RunDispose(fashionDir, textDir));

        Test("Image helpers", RunImageHelpers);

        Test("runtime: Init again with the same options and no log callback", () =>
        {
            Mirage.Runtime.Init(new RuntimeOptions { Provider = Provider.Cpu, IntraThreads = 2, LogLevel = LogLevel.Warn });
            int before;
            lock (logs) before = logs.Count;
            using (var c = new Context(fashionDir)) c.Generate(new GenerateOptions { Steps = 1 });
            lock (logs) Equal(before, logs.Count, "the old log callback is no longer called");
        });

        if (Directory.Exists(emojiDir))
            Test("emoji (RGBA, text-conditioned)", () =>
            {
                using (var emoji = new Context(emojiDir))
                {
                    var info = emoji.Info;
                    Equal(4, info.Channels, "emoji channels");
                    var images = emoji.Generate(new GenerateOptions { Prompt = "a red apple", Steps = 2, Seed = 1 });
                    Equal(1, images.Length, "one image");
                    Equal(4, images[0].Channels, "RGBA by default (the set's own)");
                    Check(images[0].ToRgba32().SequenceEqual(images[0].Pixels), "ToRgba32 of RGBA is the pixels");
                    var rgb = emoji.Generate(new GenerateOptions { Prompt = "a red apple", Steps = 2, Seed = 1, Format = PixelFormat.Rgb8 });
                    Equal(3, rgb[0].Channels, "Rgb8 on request");
                }
            });
    }

    private static void RunFashion(Context fashion, string fashionDir)
    {
        Image[] first = null;

        Test("fashion: Info", () =>
        {
            var info = fashion.Info;
            Equal("fashion", info.Name, "Name");
            Equal(28, info.Width, "Width");
            Equal(28, info.Height, "Height");
            Equal(1, info.Channels, "Channels");
            Check(info.LatentShape != null && info.LatentShape.SequenceEqual(new[] { 3, 8, 8 }), "LatentShape 3x8x8");
            Check(info.Providers.ContainsKey(ModelKind.VaeEncoder) && info.Providers.ContainsKey(ModelKind.VaeDecoder)
                && info.Providers.ContainsKey(ModelKind.Unet), "providers of the VAE and U-Net");
            Check(!info.Providers.ContainsKey(ModelKind.TextEncoder), "no text encoder");
            Check(info.Providers.Values.All(p => p == Provider.Cpu), "every model on the CPU");
            Check(info.Text == null && !info.IsTextConditioned, "not text-conditioned");
            Fails(Status.Unsupported, "TextShape() of an unconditional set", () => fashion.TextShape());
        });

        Test("fashion: Generate, determinism, formats, samplers", () =>
        {
            first = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2 });
            Equal(2, first.Length, "Count images");
            foreach (var im in first)
            {
                Equal(28, im.Width, "width");
                Equal(28, im.Height, "height");
                Equal(1, im.Channels, "the set's own channels by default");
                Equal(28 * 28, im.Pixels.Length, "pixels");
            }
            Check(first[0].Pixels.Distinct().Count() > 10, "the image is not flat");
            Check(!Same(first[0], first[1]), "two images of one batch differ");
            var again = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2 });
            Check(Same(first, again), "the same seed gives the same pixels");
            var other = fashion.Generate(new GenerateOptions { Seed = 8, Steps = 4, Count = 2 });
            Check(!Same(first[0], other[0]), "another seed gives other pixels");
            var defaults = fashion.Generate(); // 50 steps, one image
            Equal(1, defaults.Length, "Generate() with the defaults");

            var rgba = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2, Format = PixelFormat.Rgba8 });
            Equal(4, rgba[0].Channels, "Rgba8 on request");
            Check(rgba[0].Pixels.SequenceEqual(first[0].ToRgba32()), "Rgba8 is the grey image replicated, alpha 255");
            var rgb = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Format = PixelFormat.Rgb8 });
            Equal(3, rgb[0].Channels, "Rgb8 on request");

            var dpm = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Sampler = "dpm++2m" });
            var dpmUpper = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Sampler = "DPM++2M" });
            Check(Same(dpm, dpmUpper), "the sampler name is case-insensitive");
            Check(!Same(dpm[0], first[0]), "dpm++2m differs from ddim");
            var eta = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Eta = 1 });
            var eta2 = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Eta = 1 });
            Check(Same(eta, eta2), "stochastic DDIM (eta 1) is reproducible from the seed");
        });

        Test("fashion: Progress and Preview", () =>
        {
            var steps = new List<string>();
            int previews = 0;
            Image previewFirst = null;
            var images = fashion.Generate(new GenerateOptions
            {
                Seed = 7,
                Steps = 4,
                Count = 2,
                Progress = (step, total) => { steps.Add(step + "/" + total); return true; },
                Preview = (step, estimate) =>
                {
                    previews++;
                    Check(estimate.Length == 2 && estimate[0].Width == 28 && estimate[0].Channels == 1, "preview images");
                    if (step == 4) previewFirst = estimate[0];
                    return true;
                },
            });
            Equal("1/4 2/4 3/4 4/4", string.Join(" ", steps), "progress steps");
            Equal(4, previews, "preview calls");
            Check(Same(images, first), "callbacks change nothing");
            Check(previewFirst != null && Same(previewFirst, images[0]), "the last preview is the result");

            // Collections during the callbacks move nothing the library holds (pinned buffers, the state's
            // GCHandle, the callbacks' delegates).
            var collected = fashion.Generate(new GenerateOptions
            {
                Seed = 7,
                Steps = 4,
                Count = 2,
                Prompt = "",
                Sampler = "ddim",
                Progress = (step, total) => { GC.Collect(); GC.WaitForPendingFinalizers(); return true; },
                Preview = (step, estimate) => { GC.Collect(); return true; },
            });
            Check(Same(collected, first), "GC.Collect inside the callbacks changes nothing");
        });

        Test("fashion: cancel from Progress, Preview and Cancel() on another thread", () =>
        {
            int calls = 0;
            Fails(Status.Cancelled, "Progress returning false at step 2",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Progress = (s, t) => ++calls < 2 }));
            Equal(2, calls, "progress calls until the cancel");
            Fails(Status.Cancelled, "Preview returning false",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Preview = (s, i) => false }));

            var started = new ManualResetEventSlim();
            int progress = 0;
            Exception caught = null;
            var worker = new Thread(() =>
            {
                try
                {
                    fashion.Generate(new GenerateOptions
                    {
                        Steps = 1000,
                        Progress = (s, t) => { Interlocked.Increment(ref progress); started.Set(); return true; },
                    });
                }
                catch (Exception e)
                {
                    caught = e;
                }
            });
            worker.Start();
            Check(started.Wait(30000), "the generation on the other thread started");
            fashion.Cancel();
            worker.Join();
            var m = caught as MirageException;
            Check(m != null && m.Status == Status.Cancelled, "Cancel() from another thread: " + caught);
            Check(m != null && m.Detail.Length > 0, "the cancelled thread read its own message");
            Check(progress < 1000, "the generation stopped early (" + progress + " steps)");
            fashion.Cancel(); // idle: nothing to cancel
            Check(Same(fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2 }), first),
                "a generation after a cancel runs normally");

            // Cancel() from inside a callback.
            Fails(Status.Cancelled, "Cancel() inside Progress",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Progress = (s, t) => { fashion.Cancel(); return true; } }));
        });

        Test("fashion: a callback that throws", () =>
        {
            var boom = new InvalidOperationException("boom from Progress");
            int calls = 0;
            var e = Throws<InvalidOperationException>("Progress throws",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Progress = (s, t) => { calls++; if (s == 2) throw boom; return true; } }));
            Check(ReferenceEquals(e, boom), "the very exception is rethrown");
            Equal(2, calls, "no callback after the throw");
            Check(e != null && e.StackTrace != null && e.StackTrace.Contains("MirageTests"), "the thrower's stack trace is kept");

            var last = new InvalidOperationException("boom at the last step");
            var e3 = Throws<InvalidOperationException>("Progress throws at the last step",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Progress = (s, t) => { if (s == t) throw last; return true; } }));
            Check(ReferenceEquals(e3, last), "the very exception is rethrown (last step)");

            var boom2 = new FormatException("boom from Preview");
            var e2 = Throws<FormatException>("Preview throws",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Preview = (s, i) => { throw boom2; } }));
            Check(ReferenceEquals(e2, boom2), "the very exception is rethrown (Preview)");

            Throws<NullReferenceException>("a null dereference in Progress",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Progress = (s, t) => Nothing.Length > 0 }));
            Throws<ArgumentException>("a throwing callback on img2img",
                () => fashion.Img2Img(first, new GenerateOptions { Steps = 4, Strength = 0.5f, Progress = (s, t) => { throw new ArgumentException("x"); } }));
            Check(Same(fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2 }), first),
                "the context works after callbacks threw");
        });

        Test("fashion: Img2Img, Denoise, Inpaint", () =>
        {
            var o = new GenerateOptions { Seed = 3, Steps = 8, Strength = 0.5f };
            var a = fashion.Img2Img(first, o);
            Equal(2, a.Length, "one result per input");
            Equal(1, a[0].Channels, "the set's format");
            Check(Same(a, fashion.Img2Img(first, o)), "img2img is deterministic");
            Check(!Same(a[0], first[0]), "img2img changes the image");
            var far = fashion.Img2Img(first, new GenerateOptions { Seed = 3, Steps = 8, Strength = 1 });
            Check(MeanAbsDiff(a[0].Pixels, first[0].Pixels) < MeanAbsDiff(far[0].Pixels, first[0].Pixels),
                "strength 0.5 stays closer to the input than strength 1");

            var d = fashion.Denoise(new[] { first[0] }, new GenerateOptions { Steps = 20, Strength = 0.1f });
            Equal(1, d.Length, "denoise: one result");
            double dd = MeanAbsDiff(d[0].Pixels, first[0].Pixels);
            Check(dd < 20, "denoise stays close to a clean input (mean |diff| " + dd.ToString("F2") + ")");
            Check(Same(d, fashion.Denoise(new[] { first[0] }, new GenerateOptions { Steps = 20, Strength = 0.1f })), "denoise is deterministic");

            var mask = new Image(28, 28, 1);
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 14; x++) mask.Pixels[y * 28 + x] = 255;
            var p = fashion.Inpaint(new[] { first[0] }, new[] { mask }, new GenerateOptions { Seed = 5, Steps = 8 });
            Equal(1, p.Length, "inpaint: one result");
            bool kept = true, changed = false;
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++)
                {
                    int i = y * 28 + x;
                    if (x >= 14) kept &= p[0].Pixels[i] == first[0].Pixels[i];
                    else changed |= p[0].Pixels[i] != first[0].Pixels[i];
                }
            Check(kept, "inpaint keeps the unmasked pixels exactly");
            Check(changed, "inpaint changes the masked pixels");
            var rgba = fashion.Img2Img(first, new GenerateOptions { Seed = 3, Steps = 8, Strength = 0.5f, Format = PixelFormat.Rgba8 });
            Check(rgba[0].Pixels.SequenceEqual(a[0].ToRgba32()), "img2img in Rgba8 = the grey result replicated");
        });

        Test("fashion: Encode, Sample, SamplePrior, Decode, DecodeInto", () =>
        {
            var dist = fashion.Encode(first);
            Check(dist.Mean.Shape.SequenceEqual(new[] { 2, 3, 8, 8 }), "mean shape 2x3x8x8");
            Check(dist.Logvar.Shape.SequenceEqual(new[] { 2, 3, 8, 8 }), "logvar shape 2x3x8x8");
            Equal(2 * 3 * 8 * 8, dist.Mean.Data.Length, "mean floats");
            var again = fashion.Encode(first[0], first[1]);
            Check(again.Mean.Data.SequenceEqual(dist.Mean.Data), "encode is deterministic (params array)");

            var z = fashion.Sample(dist.Mean, dist.Logvar, 42);
            Check(z.Shape.SequenceEqual(dist.Mean.Shape), "sample shape");
            Check(z.Data.SequenceEqual(fashion.Sample(dist.Mean, dist.Logvar, 42).Data), "sample is deterministic");
            Check(!z.Data.SequenceEqual(dist.Mean.Data), "sample adds noise");
            Check(!z.Data.SequenceEqual(fashion.Sample(dist.Mean, dist.Logvar, 43).Data), "another seed, another sample");

            var recon = fashion.Decode(dist.Mean);
            Equal(2, recon.Length, "decode: one image per latent");
            Equal(1, recon[0].Channels, "decode: the set's format by default");
            double err = MeanAbsDiff(recon[0].Pixels, first[0].Pixels);
            Check(err < 25, "decode(encode(x)) is close to x (mean |diff| " + err.ToString("F2") + ")");

            var prior = fashion.SamplePrior(3, 5);
            Check(prior.Shape.SequenceEqual(new[] { 3, 3, 8, 8 }), "prior shape 3x3x8x8");
            Check(prior.Data.SequenceEqual(fashion.SamplePrior(3, 5).Data), "prior is deterministic");
            var decoded = fashion.Decode(prior);
            Equal(3, decoded.Length, "3 decoded images");
            var decodedRgba = fashion.Decode(prior, PixelFormat.Rgba8);
            Equal(4, decodedRgba[0].Channels, "decode in Rgba8");
            Check(decodedRgba[2].Pixels.SequenceEqual(decoded[2].ToRgba32()), "Rgba8 decode = grey replicated");

            var targets = new[] { new Image(28, 28, 1), new Image(28, 28, 1), new Image(28, 28, 4) };
            fashion.DecodeInto(prior, targets);
            Check(Same(targets[0], decoded[0]) && Same(targets[1], decoded[1]), "DecodeInto = Decode");
            Check(Same(targets[2], decodedRgba[2]), "DecodeInto an RGBA target");

            var one = prior.Item(1);
            Check(one.Shape.SequenceEqual(new[] { 1, 3, 8, 8 }), "Latents.Item shape");
            Check(Same(fashion.Decode(one)[0], decoded[1]), "Latents.Item(1) decodes to image 1");
            var mine = new Latents(new float[3 * 8 * 8], 1, 3, 8, 8);
            Equal(1, fashion.Decode(mine).Length, "decode of host-made latents");

            // Bad input.
            Throws<ArgumentException>("Latents with the wrong length", () => new Latents(new float[10], 1, 3, 8, 8));
            Throws<ArgumentNullException>("Latents(null)", () => new Latents(null, 1, 3, 8, 8));
            Throws<ArgumentOutOfRangeException>("Latents with a zero dimension", () => new Latents(new float[0], 0, 3, 8, 8));
            Fails(Status.InvalidArgument, "decode of the wrong shape", () => fashion.Decode(new Latents(new float[4 * 8 * 8], 1, 4, 8, 8)));
            var nan = new float[3 * 8 * 8];
            nan[5] = float.NaN;
            Fails(Status.InvalidArgument, "decode of NaN", () => fashion.Decode(new Latents(nan, 1, 3, 8, 8)), "NaN");
            Fails(Status.InvalidArgument, "sample with mismatched shapes", () => fashion.Sample(dist.Mean, one, 1));
            Fails(Status.InvalidArgument, "SamplePrior(0)", () => fashion.SamplePrior(0, 1));
            Throws<ArgumentOutOfRangeException>("SamplePrior(-1)", () => fashion.SamplePrior(-1, 1));
            Fails(Status.InvalidArgument, "DecodeInto with the wrong count", () => fashion.DecodeInto(prior, new[] { new Image(28, 28, 1) }));
            Fails(Status.InvalidArgument, "DecodeInto a target of the wrong size",
                () => fashion.DecodeInto(one, new[] { new Image(27, 28, 1) }));
            Throws<ArgumentNullException>("Decode(null)", () => fashion.Decode(null));
            Throws<ArgumentNullException>("Sample(null, ...)", () => fashion.Sample(null, dist.Logvar, 1));
            Throws<ArgumentNullException>("DecodeInto(..., null)", () => fashion.DecodeInto(one, null));
        });

        Test("fashion: bad input", () =>
        {
            var wrongSize = new Image(27, 28, 1);
            var wrongChannels = new Image(28, 28, 3);
            var mask = new Image(28, 28, 1);
            var o = new GenerateOptions { Steps = 4, Strength = 0.5f };
            Throws<ArgumentNullException>("Img2Img(null images)", () => fashion.Img2Img(null, o));
            Throws<ArgumentNullException>("Img2Img(null options)", () => fashion.Img2Img(first, null));
            Throws<ArgumentNullException>("Img2Img with a null image", () => fashion.Img2Img(new Image[] { null }, o));
            Throws<ArgumentNullException>("Encode(null)", () => fashion.Encode(null));
            Throws<ArgumentNullException>("Denoise(null images)", () => fashion.Denoise(null, o));
            Throws<ArgumentNullException>("Inpaint(null masks)", () => fashion.Inpaint(first, null, o));
            Fails(Status.InvalidArgument, "Img2Img of an image of the wrong size", () => fashion.Img2Img(new[] { wrongSize }, o), "27");
            Fails(Status.InvalidArgument, "Img2Img of an RGB image on a grey set", () => fashion.Img2Img(new[] { wrongChannels }, o));
            Fails(Status.InvalidArgument, "Denoise of an image of the wrong size", () => fashion.Denoise(new[] { wrongSize }, o));
            Fails(Status.InvalidArgument, "Encode of an image of the wrong size", () => fashion.Encode(wrongSize));
            Fails(Status.InvalidArgument, "Img2Img of no images", () => fashion.Img2Img(new Image[0], o));
            Fails(Status.InvalidArgument, "Inpaint with a mask of another size",
                () => fashion.Inpaint(new[] { first[0] }, new[] { new Image(28, 27, 1) }, o));
            Fails(Status.InvalidArgument, "Inpaint with an RGBA mask",
                () => fashion.Inpaint(new[] { first[0] }, new[] { new Image(28, 28, 4) }, o));
            Throws<ArgumentException>("Inpaint with fewer masks than images", () => fashion.Inpaint(first, new[] { mask }, o));
            Fails(Status.InvalidArgument, "strength 0", () => fashion.Img2Img(first, new GenerateOptions { Steps = 4, Strength = 0 }), "strength");
            Fails(Status.InvalidArgument, "strength NaN", () => fashion.Img2Img(first, new GenerateOptions { Steps = 4, Strength = float.NaN }), "strength");

            Fails(Status.InvalidArgument, "steps 0", () => fashion.Generate(new GenerateOptions { Steps = 0 }), "steps");
            Fails(Status.InvalidArgument, "steps 1001", () => fashion.Generate(new GenerateOptions { Steps = 1001 }), "steps");
            Throws<ArgumentOutOfRangeException>("steps -1", () => fashion.Generate(new GenerateOptions { Steps = -1 }));
            Fails(Status.InvalidArgument, "count 0", () => fashion.Generate(new GenerateOptions { Steps = 4, Count = 0 }), "count");
            Fails(Status.InvalidArgument, "count 1025", () => fashion.Generate(new GenerateOptions { Steps = 4, Count = 1025 }), "count");
            Fails(Status.InvalidArgument, "an unknown sampler", () => fashion.Generate(new GenerateOptions { Steps = 4, Sampler = "euler-x" }), "sampler");
            Fails(Status.InvalidArgument, "eta 2", () => fashion.Generate(new GenerateOptions { Steps = 4, Eta = 2 }), "eta");
            Fails(Status.InvalidArgument, "an unknown format", () => fashion.Generate(new GenerateOptions { Steps = 4, Format = (PixelFormat)9 }), "format");
            Throws<ArgumentException>("a NUL in the sampler", () => fashion.Generate(new GenerateOptions { Steps = 4, Sampler = "ddim\0" }));
            Throws<ArgumentException>("a NUL in the prompt", () => fashion.Generate(new GenerateOptions { Steps = 4, Prompt = "a\0b" }));
            Throws<ArgumentException>("a NUL in the negative prompt", () => fashion.Generate(new GenerateOptions { Steps = 4, Negative = "\0" }));
            Throws<ArgumentException>("a lone surrogate in the prompt", () => fashion.Generate(new GenerateOptions { Steps = 4, Prompt = "\udc00" }));
            Fails(Status.Unsupported, "a prompt on an unconditional set", () => fashion.Generate(new GenerateOptions { Steps = 4, Prompt = "a shoe" }));
            Fails(Status.Unsupported, "Embed on an unconditional set", () => fashion.Embed("a shoe"));
            Fails(Status.Unsupported, "Interpolate on an unconditional set",
                () => fashion.Interpolate(new[] { "a", "b" }, 2, new GenerateOptions { Steps = 4 }));
            Check(fashion.Generate(new GenerateOptions { Steps = 4, Prompt = "" }).Length == 1, "an empty prompt is unconditional");

            // Image arguments the binding refuses itself.
            Throws<ArgumentException>("an Image whose pixels do not fit", () => new Image(28, 28, 1, new byte[10]));
            Throws<ArgumentOutOfRangeException>("an Image of 2 channels", () => new Image(28, 28, 2));
            Throws<ArgumentOutOfRangeException>("an Image of width 0", () => new Image(0, 28, 1));

            // The message belongs to the thread that failed.
            string other = null;
            var t = new Thread(() =>
            {
                try { fashion.Generate(new GenerateOptions { Steps = 4, Sampler = "other-thread" }); }
                catch (MirageException e) { other = e.Detail; }
            });
            t.Start();
            t.Join();
            Fails(Status.InvalidArgument, "a failure on this thread keeps its own message",
                () => fashion.Generate(new GenerateOptions { Steps = 0 }), "steps");
            Check(other != null && other.Contains("other-thread"), "the other thread got its own message: " + other);
        });

        Test("fashion: concurrent generations on one context", () =>
        {
            var results = new Image[4][];
            var threads = Enumerable.Range(0, 4).Select(i => new Thread(() =>
                results[i] = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2 }))).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            Check(results.All(r => r != null && Same(r, first)), "every thread got the serial result");
        });
    }

    private static void RunText(Context text, Context fashion)
    {
        Test("fashion-text: Info, Generate with prompts", () =>
        {
            var info = text.Info;
            Equal("fashion-text", info.Name, "Name");
            Check(info.IsTextConditioned && info.Text.Tokens == 16 && info.Text.Width == 384, "text shape 16x384");
            Check(info.Providers.ContainsKey(ModelKind.TextEncoder), "a text encoder");
            Equal(16, text.TextShape().Tokens, "TextShape()");

            var o = new GenerateOptions { Prompt = "a photo of a sandal", Seed = 1, Steps = 4, Count = 2 };
            var sandals = text.Generate(o);
            Equal(2, sandals.Length, "two sandals");
            Check(Same(sandals, text.Generate(o)), "same prompt and seed, same pixels");
            var bags = text.Generate(new GenerateOptions { Prompt = "a photo of a bag", Seed = 1, Steps = 4, Count = 2 });
            Check(!Same(sandals[0], bags[0]), "another prompt, other pixels");
            var negative = text.Generate(new GenerateOptions { Prompt = "a photo of a sandal", Negative = "a sneaker", Seed = 1, Steps = 4, Count = 2 });
            Check(!Same(sandals[0], negative[0]), "a negative prompt changes the result");
            var guided = text.Generate(new GenerateOptions { Prompt = "a photo of a sandal", Guidance = 7, Seed = 1, Steps = 4, Count = 2 });
            Check(!Same(sandals[0], guided[0]), "guidance 7 differs from the set's 3");
            var three = text.Generate(new GenerateOptions { Prompt = "a photo of a sandal", Guidance = 3, Seed = 1, Steps = 4, Count = 2 });
            Check(Same(sandals, three), "the default guidance is the set's (3)");
            var unicode = text.Generate(new GenerateOptions { Prompt = "une sandale d'\u00e9t\u00e9 \u2600 \ud83d\udc61", Seed = 1, Steps = 4 });
            Equal(1, unicode.Length, "a non-ASCII prompt");
            var unconditional = text.Generate(new GenerateOptions { Seed = 1, Steps = 4 });
            Equal(1, unconditional.Length, "no prompt: unconditional");

            Fails(Status.InvalidArgument, "guidance NaN with a prompt",
                () => text.Generate(new GenerateOptions { Prompt = "a bag", Guidance = float.NaN, Steps = 4 }), "guidance");
            Fails(Status.InvalidArgument, "guidance 51", () => text.Generate(new GenerateOptions { Prompt = "a bag", Guidance = 51, Steps = 4 }), "guidance");
            Fails(Status.InvalidArgument, "guidance -2", () => text.Generate(new GenerateOptions { Prompt = "a bag", Guidance = -2, Steps = 4 }), "guidance");
            Throws<ArgumentException>("a NUL in the prompt", () => text.Generate(new GenerateOptions { Prompt = "a photo\0 of a bag", Steps = 4 }));
            Throws<ArgumentException>("a NUL in the negative prompt", () => text.Generate(new GenerateOptions { Prompt = "a bag", Negative = "x\0", Steps = 4 }));
        });

        Test("fashion-text: Img2Img and Inpaint with a prompt, cancel", () =>
        {
            var start = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4 });
            var o = new GenerateOptions { Prompt = "a photo of a bag", Seed = 2, Steps = 8, Strength = 0.6f };
            var a = text.Img2Img(start, o);
            Check(Same(a, text.Img2Img(start, o)), "text img2img is deterministic");
            var mask = new Image(28, 28, 1);
            for (int i = 0; i < 28 * 14; i++) mask.Pixels[i] = 255;
            var p = text.Inpaint(start, new[] { mask }, new GenerateOptions { Prompt = "a photo of a bag", Seed = 2, Steps = 8 });
            Check(p[0].Pixels.Skip(28 * 14).SequenceEqual(start[0].Pixels.Skip(28 * 14)), "text inpaint keeps the unmasked half");
            int calls = 0;
            Fails(Status.Cancelled, "cancel a text generation from Progress",
                () => text.Generate(new GenerateOptions { Prompt = "a bag", Steps = 4, Progress = (s, t) => ++calls < 3 }));
            Equal(3, calls, "progress calls until the cancel");
        });

        Test("fashion-text: Interpolate", () =>
        {
            var prompts = new[] { "a photo of a sandal", "a photo of a bag" };
            int lastTotal = 0;
            var o = new GenerateOptions { Seed = 4, Steps = 4, Progress = (s, t) => { lastTotal = t; return true; } };
            var frames = text.Interpolate(prompts, 3, o);
            Equal(3, frames.Length, "3 frames");
            Equal(12, lastTotal, "progress counts the steps of every frame");
            Check(Same(frames, text.Interpolate(prompts, 3, o)), "interpolate is deterministic");
            Check(!Same(frames[0], frames[2]), "the ends differ");
            var ends = text.Generate(new GenerateOptions { Prompt = prompts[0], Seed = 4, Steps = 4 });
            Check(MeanAbsDiff(ends[0].Pixels, frames[0].Pixels) < 10, "the first frame is the first prompt's image");
            var batched = text.Interpolate(prompts, 3, new GenerateOptions { Seed = 4, Steps = 4, Count = 3 });
            Equal(3, batched.Length, "3 frames in one U-Net batch");
            var three = text.Interpolate(new[] { "a sandal", "a bag", "a dress" }, 5, new GenerateOptions { Seed = 4, Steps = 4 });
            Equal(5, three.Length, "5 frames through 3 prompts");

            Fails(Status.InvalidArgument, "one prompt", () => text.Interpolate(new[] { "a bag" }, 3, o));
            Fails(Status.InvalidArgument, "1 frame", () => text.Interpolate(prompts, 1, o), "frames");
            Throws<ArgumentOutOfRangeException>("-1 frames", () => text.Interpolate(prompts, -1, o));
            Throws<ArgumentNullException>("null prompts", () => text.Interpolate(null, 3, o));
            Throws<ArgumentNullException>("a null prompt", () => text.Interpolate(new[] { "a bag", null }, 3, o));
            Throws<ArgumentException>("a NUL in a prompt", () => text.Interpolate(new[] { "a bag", "a\0dress" }, 3, o));
            Throws<ArgumentNullException>("null options", () => text.Interpolate(prompts, 3, null));
            var boom = new TimeoutException("boom");
            var e = Throws<TimeoutException>("Progress throws during interpolate",
                () => text.Interpolate(prompts, 3, new GenerateOptions { Steps = 4, Progress = (s, t) => { throw boom; } }));
            Check(ReferenceEquals(e, boom), "the very exception is rethrown (interpolate)");
        });

        Test("fashion-text: Embed", () =>
        {
            var e = text.Embed("a photo of a sandal");
            Equal(384, e.Pooled.Length, "pooled width");
            Check(e.Tokens == null, "no token embeddings unless asked for");
            double norm = Math.Sqrt(e.Pooled.Sum(v => (double)v * v));
            Check(Math.Abs(norm - 1) < 1e-3, "pooled is L2-normalised (" + norm + ")");
            var t = text.Embed("a photo of a sandal", withTokens: true);
            Equal(16 * 384, t.Tokens.Length, "token embeddings 16x384");
            Check(t.Pooled.SequenceEqual(e.Pooled), "embed is deterministic");
            Check(!text.Embed("a photo of a bag").Pooled.SequenceEqual(e.Pooled), "another prompt, another embedding");
            Equal(384, text.Embed("").Pooled.Length, "the empty prompt embeds");
            Equal(384, text.Embed("caf\u00e9 \u2603 \ud83d\udc61").Pooled.Length, "a non-ASCII prompt embeds");
            Throws<ArgumentNullException>("Embed(null)", () => text.Embed(null));
            Throws<ArgumentException>("Embed with a NUL", () => text.Embed("a\0b"));
            Throws<ArgumentException>("Embed with a lone surrogate", () => text.Embed("a\ud800b"));
        });
    }

    private static void RunDispose(string fashionDir, string textDir)
    {
        var ctx = new Context(fashionDir);
        var before = ctx.Generate(new GenerateOptions { Seed = 1, Steps = 4 });
        var latents = ctx.SamplePrior(1, 1);
        Check(!ctx.IsDisposed, "IsDisposed before Dispose");
        ctx.Dispose();
        Check(ctx.IsDisposed, "IsDisposed after Dispose");
        ctx.Dispose(); // twice: nothing
        Equal(28 * 28, before[0].Pixels.Length, "images outlive their context");
        var o = new GenerateOptions { Steps = 4 };
        Throws<ObjectDisposedException>("Info", () => { var i = ctx.Info; });
        Throws<ObjectDisposedException>("Generate", () => ctx.Generate(o));
        Throws<ObjectDisposedException>("Img2Img", () => ctx.Img2Img(before, o));
        Throws<ObjectDisposedException>("Denoise", () => ctx.Denoise(before, o));
        Throws<ObjectDisposedException>("Inpaint", () => ctx.Inpaint(before, before, o));
        Throws<ObjectDisposedException>("Interpolate", () => ctx.Interpolate(new[] { "a", "b" }, 2, o));
        Throws<ObjectDisposedException>("Embed", () => ctx.Embed("a"));
        Throws<ObjectDisposedException>("TextShape", () => ctx.TextShape());
        Throws<ObjectDisposedException>("Encode", () => ctx.Encode(before));
        Throws<ObjectDisposedException>("Sample", () => ctx.Sample(latents, latents, 1));
        Throws<ObjectDisposedException>("SamplePrior", () => ctx.SamplePrior(1, 1));
        Throws<ObjectDisposedException>("Decode", () => ctx.Decode(latents));
        Throws<ObjectDisposedException>("DecodeInto", () => ctx.DecodeInto(latents, before));
        Throws<ObjectDisposedException>("Cancel", () => ctx.Cancel());
        Throws<ObjectDisposedException>("Generate(null)", () => ctx.Generate(null));

        // using
        Image[] inUsing;
        using (var c = new Context(fashionDir)) inUsing = c.Generate(new GenerateOptions { Seed = 1, Steps = 4 });
        Check(Same(inUsing, before), "a fresh context gives the same pixels");

        // Dispose while a generation runs on another thread: it is cancelled, the context freed after it returns.
        var busy = new Context(fashionDir);
        var started = new ManualResetEventSlim();
        Exception caught = null;
        int steps = 0;
        var worker = new Thread(() =>
        {
            try
            {
                busy.Generate(new GenerateOptions { Steps = 1000, Progress = (s, t) => { steps = s; started.Set(); return true; } });
            }
            catch (Exception e)
            {
                caught = e;
            }
        });
        worker.Start();
        Check(started.Wait(30000), "the generation started");
        busy.Dispose();
        worker.Join();
        var m = caught as MirageException;
        Check(m != null && m.Status == Status.Cancelled, "Dispose cancels a running generation: " + caught);
        Check(steps < 1000, "it stopped early (" + steps + " steps)");
        Throws<ObjectDisposedException>("Generate after that Dispose", () => busy.Generate(o));

        // Dispose from inside the generation's own callback.
        var self = new Context(textDir);
        Fails(Status.Cancelled, "Dispose inside Progress",
            () => self.Generate(new GenerateOptions { Prompt = "a bag", Steps = 4, Progress = (s, t) => { self.Dispose(); return true; } }));
        Check(self.IsDisposed, "disposed from its callback");
        Throws<ObjectDisposedException>("Embed after Dispose from a callback", () => self.Embed("a bag"));

        // A context never disposed is freed by the finalizer without harm.
        new Context(fashionDir).Generate(new GenerateOptions { Steps = 1 });
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Check(true, "finalized");
    }

    private static void RunImageHelpers()
    {
        var grey = new Image(2, 2, 1, new byte[] { 1, 2, 3, 4 });
        Check(grey.ToRgba32().SequenceEqual(new byte[] { 1, 1, 1, 255, 2, 2, 2, 255, 3, 3, 3, 255, 4, 4, 4, 255 }), "grey to RGBA32");
        Check(grey.ToRgba32(bottomUp: true).SequenceEqual(new byte[] { 3, 3, 3, 255, 4, 4, 4, 255, 1, 1, 1, 255, 2, 2, 2, 255 }),
            "grey to RGBA32, bottom-up");
        var rgb = new Image(1, 2, 3, new byte[] { 1, 2, 3, 4, 5, 6 });
        Check(rgb.ToRgba32().SequenceEqual(new byte[] { 1, 2, 3, 255, 4, 5, 6, 255 }), "RGB to RGBA32");
        Check(rgb.ToRgba32(true).SequenceEqual(new byte[] { 4, 5, 6, 255, 1, 2, 3, 255 }), "RGB to RGBA32, bottom-up");
        var rgba = new Image(1, 2, 4, new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 });
        Check(rgba.ToRgba32().SequenceEqual(rgba.Pixels) && !ReferenceEquals(rgba.ToRgba32(), rgba.Pixels), "RGBA to RGBA32 copies");
        Check(rgba.ToRgba32(true).SequenceEqual(new byte[] { 5, 6, 7, 8, 1, 2, 3, 4 }), "RGBA bottom-up");
        var back = Image.FromRgba32(1, 2, rgba.ToRgba32(true), bottomUp: true);
        Check(back.Pixels.SequenceEqual(rgba.Pixels), "FromRgba32 undoes ToRgba32 (bottom-up)");
        Throws<ArgumentException>("FromRgba32 of the wrong length", () => Image.FromRgba32(2, 2, new byte[3]));
        Throws<ArgumentNullException>("FromRgba32(null)", () => Image.FromRgba32(2, 2, null));
        Check(grey.ConvertTo(4).Pixels.SequenceEqual(grey.ToRgba32()), "ConvertTo(4) of grey");
        Check(grey.ConvertTo(3).ConvertTo(1).Pixels.SequenceEqual(grey.Pixels), "grey -> RGB -> grey");
        Check(new Image(1, 1, 3, new byte[] { 255, 0, 0 }).ConvertTo(1).Pixels[0] == 76, "red to grey (BT.601)");
        Check(rgba.ConvertTo(3).Pixels.SequenceEqual(new byte[] { 1, 2, 3, 5, 6, 7 }), "RGBA to RGB drops alpha");
        Equal(PixelFormat.Rgb8, rgb.Format, "Format of 3 channels");
        Equal(15, new Image(3, 5, 1).Pixels.Length, "zeroed pixels when none are given");
    }
}
