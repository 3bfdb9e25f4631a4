// A C# program.
using System;
using System.Collections.Generic;
using Json = System.Text.Json.JsonSerializer;

namespace Demo.App
{
    public interface IGreeter
    {
        string Greet(string name);
    }

    public struct Pair
    {
        public int A;
        public int B;
    }

    public enum Level { Low, High }

    public class Greeter : IGreeter
    {
        public Greeter() { }

        public string Greet(string name)
        {
            return $"Hello {name}";
        }

        public static void Main(string[] args)
        {
            Console.WriteLine(new Greeter().Greet("world"));
        }
    }
}
