// Stand-ins for what Unity and .NET Core 3+ provide, so that run-tests.sh can compile Mirage.cs's
// platform branches with mono's mcs: `-define:UNITY_5_3_OR_NEWER` (Unity's AOT.MonoPInvokeCallbackAttribute)
// and `-define:NETCOREAPP3_0_OR_GREATER` (System.Runtime.InteropServices.NativeLibrary). Compiled only; the
// stubs do nothing.
#if UNITY_5_3_OR_NEWER
namespace AOT
{
    [System.AttributeUsage(System.AttributeTargets.Method)]
    public sealed class MonoPInvokeCallbackAttribute : System.Attribute
    {
        public MonoPInvokeCallbackAttribute(System.Type type) { }
    }
}
#endif

#if NETCOREAPP3_0_OR_GREATER
namespace System.Runtime.InteropServices
{
    public delegate IntPtr DllImportResolver(string libraryName, System.Reflection.Assembly assembly, DllImportSearchPath? searchPath);

    public static class NativeLibrary
    {
        public static void SetDllImportResolver(System.Reflection.Assembly assembly, DllImportResolver resolver) { }

        public static IntPtr Load(string libraryPath) { return IntPtr.Zero; }
    }
}
#endif
